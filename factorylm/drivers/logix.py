"""Allen-Bradley Logix / Micro800 driver on pycomm3's LogixDriver (EtherNet/IP, CIP).

Two pycomm3 1.2.16 facts shape this module:

* It normally uploads the controller's tag list when it connects. Micro800 controllers and
  cpppo's EtherNet/IP server do not implement that service, so tag definitions come from the
  plant file instead (`tag:` and `type:` per point) and the upload is switched off.
* For a write of exactly one tag it builds the request message twice, so the PLC receives the
  write service twice in one packet and answers with a reply pycomm3 cannot parse. The
  subclass below keeps the first build. Multi-tag writes take another path and are correct.

pycomm3 blocks, so every call runs on the PLC's own thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pycomm3 import LogixDriver as _Pycomm3LogixDriver
from pycomm3.cip import DataTypes
from pycomm3.exceptions import PycommError
from pycomm3.packets.logix import WriteTagRequestPacket
from pycomm3.tag import Tag

from factorylm.drivers import PlcError
from factorylm.drivers.blocking import PlcThread
from factorylm.plant import Plc, Point

_CIP_TYPES = {"real": "REAL", "dint": "DINT", "int": "INT", "bool": "BOOL"}


def tag_definition(tag: str, cip_type: str) -> dict[str, Any]:
    """The shape pycomm3 builds from a tag-list upload, for an atomic controller-scope tag."""
    return {
        "tag_name": tag,
        "dim": 0,
        "alias": False,
        "instance_id": 0,
        "tag_type": "atomic",
        "data_type": cip_type,
        "data_type_name": cip_type,
        "type_class": DataTypes.get(cip_type),  # type: ignore[no-untyped-call]
    }


class ConfiguredTagsLogixDriver(_Pycomm3LogixDriver):
    """pycomm3's driver with tag definitions from configuration and a correct single write."""

    def __init__(self, path: str, tags: dict[str, str], *, timeout_s: float) -> None:
        super().__init__(path, init_tags=False, init_program_tags=False)
        self._cfg["socket_timeout"] = timeout_s
        self._tags = {name: tag_definition(name, cip) for name, cip in tags.items()}

    def _write_build_single_request(self, parsed_tag: dict[str, Any]) -> Any:
        request = super()._write_build_single_request(parsed_tag)  # type: ignore[no-untyped-call]
        if type(request) is WriteTagRequestPacket:
            # pycomm3 resets this flag after building, so send() would append the message again.
            request._msg_setup = True
        return request


def _tags_of(plc: Plc) -> dict[str, str]:
    return {p.tag: _CIP_TYPES[p.type] for p in [*plc.metrics, *plc.setpoints] if p.tag}


class LogixDriver:
    def __init__(self, plc: Plc, *, timeout_s: float = 1.0) -> None:
        self.plc = plc
        self._timeout_s = timeout_s
        self._thread = PlcThread(plc.id)
        self._driver: ConfiguredTagsLogixDriver | None = None

    def _where(self) -> str:
        return f"{self.plc.host}:{self.plc.tcp_port}"

    def _connect_blocking(self) -> ConfiguredTagsLogixDriver:
        if self._driver is not None and self._driver.connected:
            return self._driver
        driver = ConfiguredTagsLogixDriver(
            self._where(), _tags_of(self.plc), timeout_s=self._timeout_s
        )
        driver.open()  # type: ignore[no-untyped-call]
        self._driver = driver
        return driver

    def _close_blocking(self) -> None:
        driver, self._driver = self._driver, None
        if driver is not None:
            try:
                driver.close()  # type: ignore[no-untyped-call]
            except (PycommError, OSError):
                pass

    async def connect(self) -> None:
        try:
            await self._thread.run(self._connect_blocking)
        except (PycommError, OSError) as exc:
            raise PlcError(
                f"PLC {self.plc.id}: no EtherNet/IP answer at {self._where()} ({exc})"
            ) from exc

    async def close(self) -> None:
        await self._thread.run(self._close_blocking)

    def shutdown(self) -> None:
        self._thread.shutdown()

    def _read_blocking(self, points: list[Point]) -> dict[str, float]:
        driver = self._connect_blocking()
        tags = [p.tag for p in points if p.tag]
        # One read call for the whole group: pycomm3 packs it into a multi-service request
        # (a Micro800 gets one request per tag; it has no multi-service support).
        result = driver.read(*tags)
        results: list[Tag] = result if isinstance(result, list) else [result]
        values: dict[str, float] = {}
        for point, tag in zip(points, results, strict=True):
            if tag.error or tag.value is None:
                raise _TagError(f"tag {point.tag} ({point.name}): {tag.error or 'no value'}")
            values[point.name] = float(tag.value) * point.scale
        return values

    async def read_points(self, points: list[Point]) -> dict[str, float]:
        try:
            return await self._thread.run(self._read_blocking, points)
        except _TagError as exc:
            raise PlcError(f"PLC {self.plc.id}: EtherNet/IP read failed: {exc}") from exc
        except (PycommError, OSError) as exc:
            await self._thread.run(self._close_blocking)
            raise PlcError(
                f"PLC {self.plc.id}: EtherNet/IP read at {self._where()} failed: {exc}"
            ) from exc

    def _write_blocking(self, points: Sequence[tuple[Point, float]]) -> None:
        driver = self._connect_blocking()
        pairs = [(p.tag, _cast(p, v)) for p, v in points]
        result = driver.write(*pairs) if len(pairs) > 1 else driver.write(*pairs[0])
        for tag in result if isinstance(result, list) else [result]:
            if tag.error:
                raise _TagError(f"tag {tag.tag}: {tag.error}")

    async def write_points(self, values: Sequence[tuple[Point, float]]) -> None:
        """Write several tags in one request (the simulator uses this to update its tags)."""
        if not values:
            return
        try:
            await self._thread.run(self._write_blocking, values)
        except _TagError as exc:
            raise PlcError(f"PLC {self.plc.id}: EtherNet/IP write failed: {exc}") from exc
        except (PycommError, OSError) as exc:
            await self._thread.run(self._close_blocking)
            raise PlcError(
                f"PLC {self.plc.id}: EtherNet/IP write at {self._where()} failed: {exc}"
            ) from exc

    async def write_point(self, point: Point, value: float) -> None:
        await self.write_points([(point, value)])


class _TagError(Exception):
    """The PLC answered, but refused or did not know a tag."""


def _cast(point: Point, value: float) -> float | int | bool:
    raw = value / point.scale
    if point.type == "real":
        return raw
    if point.type == "bool":
        return bool(raw)
    return round(raw)
