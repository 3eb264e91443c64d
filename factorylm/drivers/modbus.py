"""Modbus drivers on pymodbus's async clients (TCP and RTU): one request per contiguous
register block, decoded and scaled through the plant file's register map."""

from __future__ import annotations

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from factorylm.drivers import PlcError
from factorylm.drivers.registers import ReadBlock, encode, plan_reads
from factorylm.plant import Plc, Point


class _ModbusDriver:
    _client: AsyncModbusTcpClient | AsyncModbusSerialClient

    def __init__(self, plc: Plc) -> None:
        self.plc = plc
        self._plans: dict[tuple[str, ...], list[ReadBlock]] = {}
        self._last_points: list[Point] | None = None
        self._last_plan: list[ReadBlock] = []

    def _where(self) -> str:
        raise NotImplementedError

    async def connect(self) -> None:
        if self._client.connected:
            return
        if not await self._client.connect():
            raise PlcError(f"PLC {self.plc.id}: no Modbus answer at {self._where()}")

    async def close(self) -> None:
        self._client.close()

    async def read_points(self, points: list[Point]) -> dict[str, float]:
        await self.connect()
        if points is self._last_points:  # a collector asks for the same list every cycle
            blocks = self._last_plan
        else:
            key = tuple(p.name for p in points)
            if key not in self._plans:
                self._plans[key] = plan_reads(points)
            blocks = self._plans[key]
            self._last_points, self._last_plan = points, blocks
        values: dict[str, float] = {}
        for block in blocks:
            try:
                response = await self._client.read_holding_registers(
                    block.start, count=block.count, device_id=self.plc.device_id
                )
            except ModbusException as exc:
                raise PlcError(
                    f"PLC {self.plc.id}: read {block.start}+{block.count} at {self._where()}: {exc}"
                ) from exc
            if response.isError():
                raise PlcError(
                    f"PLC {self.plc.id}: read {block.start}+{block.count} answered {response}"
                )
            values.update(block.values(response.registers))
        return values

    async def write_point(self, point: Point, value: float) -> None:
        await self.connect()
        assert point.address is not None
        words = encode(point, value)
        try:
            if len(words) == 1:
                response = await self._client.write_register(
                    point.address, words[0], device_id=self.plc.device_id
                )
            else:
                response = await self._client.write_registers(
                    point.address, words, device_id=self.plc.device_id
                )
        except ModbusException as exc:
            raise PlcError(f"PLC {self.plc.id}: write {point.name}: {exc}") from exc
        if response.isError():
            raise PlcError(f"PLC {self.plc.id}: write {point.name} answered {response}")


class ModbusTcpDriver(_ModbusDriver):
    def __init__(self, plc: Plc, *, timeout_s: float = 1.0) -> None:
        super().__init__(plc)
        self._client = AsyncModbusTcpClient(
            plc.host, port=plc.tcp_port, timeout=timeout_s, retries=0, reconnect_delay=0
        )

    def _where(self) -> str:
        return f"{self.plc.host}:{self.plc.tcp_port}"


class ModbusRtuDriver(_ModbusDriver):
    def __init__(self, plc: Plc, *, timeout_s: float = 1.0) -> None:
        super().__init__(plc)
        if not plc.serial_port:
            raise PlcError(f"PLC {plc.id}: modbus_rtu needs serial_port in the plant file")
        self._client = AsyncModbusSerialClient(
            plc.serial_port,
            framer=FramerType.RTU,
            baudrate=plc.baudrate,
            parity=plc.parity,
            bytesize=plc.bytesize,
            stopbits=plc.stopbits,
            timeout=timeout_s,
            retries=0,
            reconnect_delay=0,
        )

    def _where(self) -> str:
        p = self.plc
        return (
            f"{p.serial_port} ({p.baudrate} {p.bytesize}{p.parity}{p.stopbits}, id {p.device_id})"
        )
