"""A simulated Siemens S7 PLC on python-snap7's server: data blocks laid out by the plant file.

snap7's server runs its own threads and serves straight from the registered bytearrays, so
the simulator changes a value by writing into the bytearray under the server's area lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from snap7.server import Server
from snap7.type import SrvArea

from dev.simulator.peer import SimulatedPeer
from factorylm.drivers.s7 import byte_size, decode, encode
from factorylm.plant import Plc, Point, Protocol


class _Snap7Server(Server):
    """snap7's server, with a switch that makes it stop answering (a hung CPU)."""

    def __init__(self) -> None:
        super().__init__(log=False)
        self.answering = threading.Event()
        self.answering.set()

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
