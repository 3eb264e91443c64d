"""A simulated Siemens S7 PLC on python-snap7's server: data blocks laid out by the plant file.

snap7's server runs its own threads and serves straight from the registered bytearrays, so
the simulator changes a value by writing into the bytearray under the server's area lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from snap7.datatypes import S7Area, S7WordLen
from snap7.server import Server
from snap7.type import SrvArea

from dev.simulator.peer import SimulatedPeer
from factorylm.drivers.s7 import byte_size, decode, encode
from factorylm.plant import Plc, Point, Protocol


class _Snap7Server(Server):
    """snap7's server, with a switch that makes it stop answering (a hung CPU), and bit
    writes that change only their bit, as a CPU does."""

    def __init__(self) -> None:
        super().__init__(log=False)
        self.answering = threading.Event()
        self.answering.set()
        self._bit = threading.local()  # the bit of the write request being served, if any

    def _parse_address_specification(self, addr_spec: bytes) -> dict[str, Any]:
        parsed: dict[str, Any] = super()._parse_address_specification(addr_spec)
        # snap7's server keeps only the byte of a bit address (byte.bit in the last 3 bytes).
        if parsed and parsed.get("word_len") == S7WordLen.BIT and len(addr_spec) >= 12:
            parsed["bit"] = addr_spec[11] & 7
        return parsed

    def _handle_write_area(self, request: dict[str, Any], client_address: Any) -> bytes:
        self._bit.value = request.get("parameters", {}).get("address_spec", {}).get("bit")
        try:
            response: bytes = super()._handle_write_area(request, client_address)
            return response
        finally:
            self._bit.value = None

    def _write_to_memory_area(
        self, area: S7Area, db_number: int, start: int, write_data: bytearray
    ) -> bool:
        bit = getattr(self._bit, "value", None)
        if bit is None:
            written: bool = super()._write_to_memory_area(area, db_number, start, write_data)
            return written
        # snap7's server would store the bit's value (0 or 1) as the whole byte.
        key = (area, db_number)
        memory = self.memory_areas.get(key)
        if memory is None or start >= len(memory) or not write_data:
            return False
        with self.area_locks[key]:
            mask = 1 << bit
            memory[start] = (memory[start] | mask) if write_data[0] & 1 else (memory[start] & ~mask)
        return True

    def _process_request(self, request_data: bytes, client_address: Any) -> bytes | None:
        if not self.answering.is_set():
            return None
        response: bytes | None = super()._process_request(request_data, client_address)
        return response


class SimulatedS7Plc(SimulatedPeer):
    protocol_label = "S7"

    def __init__(self, plc: Plc, *, seed: int = 0, tick_s: float | None = None) -> None:
        if plc.protocol is not Protocol.S7:
            raise ValueError(f"{plc.id}: not an S7 PLC")
        super().__init__(plc, seed=seed, tick_s=tick_s)
        self.dbs: dict[int, bytearray] = {}
        for point in [*plc.metrics, *plc.setpoints]:
            assert point.db is not None and point.offset is not None
            size = point.offset + byte_size(point)
            db = self.dbs.setdefault(point.db, bytearray())
            if len(db) < size:
                db.extend(bytes(size - len(db)))
        self._server = _Snap7Server()
        for number, data in self.dbs.items():
            self._server.register_area(SrvArea.DB, number, data)

    @property
    def address(self) -> str:
        return f"{self.plc.host}:{self.plc.tcp_port}"

    async def _serve(self) -> None:
        # Note: snap7 binds with SO_REUSEPORT, so a second server on a busy port does not fail.
        self._server.start_to(self.plc.host, self.plc.tcp_port)

    async def _unserve(self) -> None:
        self._server.answering.set()
        self._server.stop()

    async def _set_answering(self, answering: bool) -> None:
        if answering:
            self._server.answering.set()
        else:
            self._server.answering.clear()

    async def _store(self, values: Sequence[tuple[Point, float]]) -> None:
        for point, value in values:
            assert point.db is not None and point.offset is not None
            data = self.dbs[point.db]
            self._server.lock_area(SrvArea.DB, point.db)
            try:
                current = data[point.offset]
                data[point.offset : point.offset + byte_size(point)] = encode(point, value, current)
            finally:
                self._server.unlock_area(SrvArea.DB, point.db)

    async def read(self, name: str) -> float:
        point = self.plc.point(name)
        if point is None or point.db is None or point.offset is None:
            raise KeyError(f"{self.plc.id} has no point {name!r}")
        data = self.dbs[point.db]
        return decode(point, data[point.offset : point.offset + byte_size(point)])
