"""Siemens S7 driver on python-snap7's client: one DB read per contiguous data-block area.

snap7's client blocks, so every call runs on the PLC's own thread (`PlcThread`). Values are
big-endian as the S7 stores them: REAL (4 bytes), DINT (4), INT (2), BOOL (one bit of a byte,
written as a single bit).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import snap7
from snap7.error import S7Error
from snap7.type import Area, WordLen

from factorylm.drivers import PlcError
from factorylm.drivers.blocking import PlcThread
from factorylm.plant import Plc, Point

_SIZES = {"real": 4, "dint": 4, "int": 2, "bool": 1}
_FORMATS = {"real": ">f", "dint": ">i", "int": ">h"}
# An S7-1200 PDU is 240 bytes; 200 leaves room for the headers. Small gaps are read through.
MAX_BYTES_PER_READ = 200
_MAX_GAP = 32


def byte_size(point: Point) -> int:
    return _SIZES[point.type]


def decode(point: Point, data: bytes | bytearray) -> float:
    if point.type == "bool":
        assert point.bit is not None
        return float((data[0] >> point.bit) & 1)
    return float(struct.unpack(_FORMATS[point.type], bytes(data[: byte_size(point)]))[0]) * (
        point.scale
    )


def encode(point: Point, value: float, current: int = 0) -> bytearray:
    """Bytes for the point's offset; a bool is merged into the byte's current value (the
    simulator keeps its memory this way; the driver writes a bool as a single bit)."""
    if point.type == "bool":
        assert point.bit is not None
        mask = 1 << point.bit
        return bytearray([(current | mask) if value else (current & ~mask)])
    raw = value / point.scale
    return bytearray(struct.pack(_FORMATS[point.type], raw if point.type == "real" else round(raw)))


@dataclass(frozen=True)
class DbArea:
    db: int
    start: int
    size: int
    points: tuple[Point, ...]

    def values(self, data: bytes | bytearray) -> dict[str, float]:
        out = {}
        for point in self.points:
            assert point.offset is not None
            lo = point.offset - self.start
            out[point.name] = decode(point, data[lo : lo + byte_size(point)])
        return out


def plan_reads(points: list[Point]) -> list[DbArea]:
    """Group points into as few DB reads as the PDU allows (one per DB when they are close)."""
    areas: list[DbArea] = []
    ordered = sorted(points, key=lambda p: (p.db or 0, p.offset or 0))
    db = start = end = -1
    members: list[Point] = []
    for point in ordered:
        assert point.db is not None and point.offset is not None
        p_end = point.offset + byte_size(point)
        if (
            members
            and point.db == db
            and point.offset - end <= _MAX_GAP
            and p_end - start <= MAX_BYTES_PER_READ
        ):
            end = max(end, p_end)
            members.append(point)
            continue
        if members:
            areas.append(DbArea(db, start, end - start, tuple(members)))
        db, start, end, members = point.db, point.offset, p_end, [point]
    if members:
        areas.append(DbArea(db, start, end - start, tuple(members)))
    return areas


class S7Driver:
    def __init__(self, plc: Plc, *, timeout_s: float = 1.0) -> None:
        self.plc = plc
        self._timeout_s = timeout_s
        self._client = snap7.client.Client()
        self._thread = PlcThread(plc.id)
        self._plans: dict[tuple[str, ...], list[DbArea]] = {}

    def _where(self) -> str:
        return f"{self.plc.host}:{self.plc.tcp_port} rack {self.plc.rack} slot {self.plc.slot}"

    def _connect_blocking(self) -> None:
        if self._client.get_connected():
            return
        self._client.connect(self.plc.host, self.plc.rack, self.plc.slot, self.plc.tcp_port)
        # snap7 waits 5 s for an answer by default; a poll cycle cannot afford that.
        connection = getattr(self._client, "connection", None)
        if connection is not None:
            connection.timeout = self._timeout_s
            sock = getattr(connection, "socket", None)
            if sock is not None:
                sock.settimeout(self._timeout_s)

    def _disconnect_blocking(self) -> None:
        try:
            self._client.disconnect()
        except (S7Error, OSError):
            pass

    async def connect(self) -> None:
        try:
            await self._thread.run(self._connect_blocking)
        except (S7Error, OSError) as exc:
            raise PlcError(f"PLC {self.plc.id}: no S7 answer at {self._where()} ({exc})") from exc

    async def close(self) -> None:
        await self._thread.run(self._disconnect_blocking)

    def shutdown(self) -> None:
        self._thread.shutdown()

    def _read_blocking(self, areas: list[DbArea]) -> dict[str, float]:
        self._connect_blocking()
        values: dict[str, float] = {}
        for area in areas:
            data = self._client.db_read(area.db, area.start, area.size)
            if len(data) < area.size:
                raise S7Error(f"DB{area.db}.{area.start}+{area.size} answered {len(data)} bytes")
            values.update(area.values(data))
        return values

    async def read_points(self, points: list[Point]) -> dict[str, float]:
        key = tuple(p.name for p in points)
        areas = self._plans.get(key)
        if areas is None:
            areas = self._plans[key] = plan_reads(points)
        try:
            return await self._thread.run(self._read_blocking, areas)
        except (S7Error, OSError) as exc:
            await self._thread.run(self._disconnect_blocking)
            raise PlcError(f"PLC {self.plc.id}: S7 read at {self._where()} failed: {exc}") from exc

    def _write_blocking(self, point: Point, value: float) -> None:
        self._connect_blocking()
        assert point.db is not None and point.offset is not None
        if point.type == "bool":
            assert point.bit is not None
            # One bit, addressed DBX offset.bit: the CPU changes that bit alone. Reading the
            # byte and writing it back would put back whatever its program changed in the
            # other seven bits meanwhile.
            self._client.write_area(
                Area.DB,
                point.db,
                point.offset * 8 + point.bit,
                bytearray([1 if value else 0]),
                WordLen.Bit,
            )
            return
        self._client.db_write(point.db, point.offset, encode(point, value))

    async def write_point(self, point: Point, value: float) -> None:
        try:
            await self._thread.run(self._write_blocking, point, value)
        except (S7Error, OSError) as exc:
            await self._thread.run(self._disconnect_blocking)
            raise PlcError(f"PLC {self.plc.id}: S7 write {point.name} failed: {exc}") from exc
