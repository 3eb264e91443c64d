"""PLC drivers, one module per protocol, all reading and writing named points."""

from __future__ import annotations

import importlib
from typing import Protocol as _Protocol
from typing import cast

from factorylm.plant import Plc, Point
from factorylm.protocols import PROTOCOLS


class PlcError(RuntimeError):
    """A PLC did not answer or answered with an error; the message names the PLC."""


class PlcDriver(_Protocol):
    plc: Plc

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def read_points(self, points: list[Point]) -> dict[str, float]: ...

    async def write_point(self, point: Point, value: float) -> None: ...


def driver_for(plc: Plc, *, timeout_s: float | None = None) -> PlcDriver:
    """The driver of the PLC's protocol (factorylm.protocols), imported when first needed."""
    module, _, cls = PROTOCOLS[plc.protocol].driver.partition(":")
    driver = getattr(importlib.import_module(module), cls)
    timeout = timeout_s if timeout_s is not None else plc.timeout_ms / 1000
    return cast(PlcDriver, driver(plc, timeout_s=timeout))
