"""Simulated Modbus PLCs on pymodbus's own servers, registers laid out by the plant file:
TCP on a loopback port, RTU on one end of a socat pty pair whose other end is the PLC's
configured `serial_port`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from dev.simulator.peer import HELPER_PROCESS, SimulatedPeer
from factorylm.drivers.registers import decode, encode
from factorylm.plant import Plc, Point, Protocol

log = logging.getLogger(__name__)

_HOLDING = 3  # function code that selects the holding-register block


def _device(plc: Plc) -> SimDevice:
    points = [*plc.metrics, *plc.setpoints]
    size = max((p.address or 0) + p.register_count for p in points)
    size = max(size, 51)  # devices in the plans expose holding registers 0-50
    return SimDevice(
        id=plc.device_id, simdata=[SimData(0, count=size, values=0, datatype=DataType.REGISTERS)]
    )


class _ModbusPeer(SimulatedPeer):
    protocol_label = "Modbus"
    _server: ModbusTcpServer | ModbusSerialServer

    requests_answered = 0

    def _trace(self, sending: bool, data: bytes) -> bytes:
        # Offline: requests are still taken in, but no answer ever leaves (a hung device).
        if sending and self.offline:
            return b""
        if sending:
            self.requests_answered += 1
        return data

    async def _set_answering(self, answering: bool) -> None:
        return None  # _trace reads self.offline

    async def _store(self, values: Sequence[tuple[Point, float]]) -> None:
        for point, value in values:
            assert point.address is not None
            await self._server.context.async_setValues(
                self.plc.device_id, _HOLDING, point.address, encode(point, value)
            )

    async def read(self, name: str) -> float:
        point = self.plc.point(name)
        if point is None or point.address is None:
            raise KeyError(f"{self.plc.id} has no point {name!r}")
        words = await self._server.context.async_getValues(
            self.plc.device_id, _HOLDING, point.address, point.register_count
        )
        assert isinstance(words, list)
        return decode(point, [int(w) for w in words])


class SimulatedModbusPlc(_ModbusPeer):
    """Modbus TCP."""

    protocol_label = "Modbus TCP"

    def __init__(self, plc: Plc, *, seed: int = 0, tick_s: float | None = None) -> None:
        if plc.protocol is not Protocol.MODBUS_TCP:
            raise ValueError(f"{plc.id}: not a Modbus TCP PLC")
        super().__init__(plc, seed=seed, tick_s=tick_s)
        self._server = ModbusTcpServer(
            _device(plc), address=(plc.host, plc.tcp_port), trace_packet=self._trace
        )

    @property
    def address(self) -> str:
        return f"{self.plc.host}:{self.plc.tcp_port}"

    async def _serve(self) -> None:
        await self._server.serve_forever(background=True)

    async def _unserve(self) -> None:
        await self._server.shutdown()  # type: ignore[no-untyped-call]


class SimulatedModbusRtuPlc(_ModbusPeer):
    """Modbus RTU over a socat pty pair: the collector opens `serial_port`, the server the
    pair's other end (`serial_port` + ".peer")."""

    protocol_label = "Modbus RTU"

    def __init__(self, plc: Plc, *, seed: int = 0, tick_s: float | None = None) -> None:
        if plc.protocol is not Protocol.MODBUS_RTU or not plc.serial_port:
            raise ValueError(f"{plc.id}: not a Modbus RTU PLC with a serial_port")
        super().__init__(plc, seed=seed, tick_s=tick_s)
        self.client_end = Path(plc.serial_port)
        self.server_end = Path(f"{plc.serial_port}.peer")
        self._socat: asyncio.subprocess.Process | None = None
        self._server = ModbusSerialServer(
            _device(plc),
            framer=FramerType.RTU,
            port=str(self.server_end),
            baudrate=plc.baudrate,
            parity=plc.parity,
            bytesize=plc.bytesize,
            stopbits=plc.stopbits,
            trace_packet=self._trace,
        )

    @property
    def address(self) -> str:
        return f"{self.client_end} (socat pty pair)"

    async def _serve(self) -> None:
        self.client_end.parent.mkdir(parents=True, exist_ok=True)
        for link in (self.client_end, self.server_end):
            if link.is_symlink():  # left behind by a simulator that was killed
                link.unlink()
            elif link.exists():
                raise RuntimeError(f"{link} exists and is not a pty link; refusing to replace it")
        try:
            self._socat = await asyncio.create_subprocess_exec(
                "socat",
                "-d",
                "-d",
                f"pty,raw,echo=0,link={self.client_end}",
                f"pty,raw,echo=0,link={self.server_end}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                **HELPER_PROCESS,
            )
        except FileNotFoundError as exc:
            raise RuntimeError(
                "socat is not installed (it links the simulated RTU device to a pty); "
                "run `make setup` or `apt-get install socat`"
            ) from exc
        await self._socat_ready()
        await self._server.serve_forever(background=True)

    async def _socat_ready(self) -> None:
        assert self._socat is not None and self._socat.stderr is not None
        seen: list[bytes] = []
        while True:
            try:
                line = await asyncio.wait_for(self._socat.stderr.readline(), 10)
            except TimeoutError:
                line = b""
            if not line:
                raise RuntimeError(f"socat did not link {self.client_end}: {b''.join(seen)!r}")
            seen.append(line)
            if b"starting data transfer loop" in line:
                break
        # socat keeps logging at -d -d; nobody reads it from here on.
        self._drain = asyncio.create_task(self._discard(self._socat.stderr))

    @staticmethod
    async def _discard(stream: asyncio.StreamReader) -> None:
        while await stream.read(65536):
            pass

    async def _unserve(self) -> None:
        await self._server.shutdown()  # type: ignore[no-untyped-call]
        if self._socat is not None and self._socat.returncode is None:
            self._socat.terminate()
            await self._socat.wait()
        for link in (self.client_end, self.server_end):
            if link.is_symlink():
                link.unlink()
