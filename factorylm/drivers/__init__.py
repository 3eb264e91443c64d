"""PLC drivers, one module per protocol, all reading and writing named points."""

from __future__ import annotations

from typing import Protocol as _Protocol

from factorylm.plant import Plc, Point, Protocol


class PlcError(RuntimeError):
    """A PLC did not answer or answered with an error; the message names the PLC."""


class PlcDriver(_Protocol):
    plc: Plc

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def read_points(self, points: list[Point]) -> dict[str, float]: ...

    async def write_point(self, point: Point, value: float) -> None: ...


def driver_for(plc: Plc, *, timeout_s: float = 1.0) -> PlcDriver:
    if plc.protocol is Protocol.MODBUS_TCP:
        from factorylm.drivers.modbus import ModbusTcpDriver

        return ModbusTcpDriver(plc, timeout_s=timeout_s)
    raise PlcError(
        f"PLC {plc.id}: protocol {plc.protocol} has no driver in this build yet "
        "(supported: modbus_tcp)"
    )
