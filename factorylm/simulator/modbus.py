"""A simulated Modbus TCP PLC: pymodbus's own server, registers laid out by the plant file."""

from __future__ import annotations

import asyncio
import logging
import zlib

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from factorylm.drivers.registers import decode, encode
from factorylm.plant import Plc, Protocol
from factorylm.simulator.signals import Fault, FaultKind, Signal

log = logging.getLogger(__name__)

_HOLDING = 3  # function code that selects the holding-register block


class SimulatedModbusPlc:
    def __init__(self, plc: Plc, *, seed: int = 0) -> None:
        if plc.protocol is not Protocol.MODBUS_TCP:
            raise ValueError(f"{plc.id}: not a Modbus TCP PLC")
        self.plc = plc
        self.signals: dict[str, Signal] = {}
        for metric in plc.metrics:
            base = metric.baseline
            mean, std = (base.mean, base.std) if base else (100.0, 1.0)
            signal = Signal(mean=mean, std=std)
            signal.seed(seed ^ zlib.crc32(f"{plc.id}/{metric.name}".encode()))
            self.signals[metric.name] = signal
        points = [*plc.metrics, *plc.setpoints]
        size = max((p.address or 0) + p.register_count for p in points)
        size = max(size, 51)  # devices in the plans expose holding registers 0-50
        device = SimDevice(
            id=plc.device_id,
            simdata=[SimData(0, count=size, values=0, datatype=DataType.REGISTERS)],
        )
        self._server = ModbusTcpServer(device, address=(plc.host, plc.port or 502))
        self._task: asyncio.Task[None] | None = None
        self._period = plc.poll_interval_ms / 1000 / 2

    async def start(self) -> None:
        await self._server.serve_forever(background=True)
        for setpoint in self.plc.setpoints:
            # Setpoints power up at their upper bound (running at nominal), as a real PLC would.
            await self._write(setpoint.name, setpoint.max)
        await self.tick()
        self._task = asyncio.create_task(self._run(), name=f"sim-{self.plc.id}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._server.shutdown()  # type: ignore[no-untyped-call]

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            await self.tick()

    async def tick(self) -> None:
        for metric in self.plc.metrics:
            value = self.signals[metric.name].value()
            if value is not None:
                await self._write(metric.name, value)

    async def _write(self, name: str, value: float) -> None:
        point = self.plc.point(name)
        assert point is not None and point.address is not None
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

    def inject(self, metric: str, kind: FaultKind, size_sigma: float = 0.0) -> None:
        if metric not in self.signals:
            raise KeyError(f"{self.plc.id} has no metric {metric!r}")
        self.signals[metric].fault = Fault(kind=kind, size_sigma=size_sigma)
        log.info("injected %s %+.1fσ on %s/%s", kind, size_sigma, self.plc.id, metric)

    def clear(self, metric: str | None = None) -> None:
        for name, signal in self.signals.items():
            if metric is None or name == metric:
                signal.fault = None
