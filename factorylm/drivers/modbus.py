"""Modbus TCP driver on pymodbus's async client: one request per contiguous register block."""

from __future__ import annotations

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from factorylm.drivers import PlcError
from factorylm.drivers.registers import encode, plan_reads
from factorylm.plant import Plc, Point


class ModbusTcpDriver:
    def __init__(self, plc: Plc, *, timeout_s: float = 1.0) -> None:
        self.plc = plc
        self._client = AsyncModbusTcpClient(
            plc.host, port=plc.port or 502, timeout=timeout_s, retries=0, reconnect_delay=0
        )

    async def connect(self) -> None:
        if self._client.connected:
            return
        if not await self._client.connect():
            raise PlcError(
                f"PLC {self.plc.id}: no Modbus TCP answer at {self.plc.host}:{self.plc.port}"
            )

    async def close(self) -> None:
        self._client.close()

    async def read_points(self, points: list[Point]) -> dict[str, float]:
        await self.connect()
        values: dict[str, float] = {}
        for block in plan_reads(points):
            try:
                response = await self._client.read_holding_registers(
                    block.start, count=block.count, device_id=self.plc.device_id
                )
            except ModbusException as exc:
                raise PlcError(
                    f"PLC {self.plc.id}: read {block.start}+{block.count}: {exc}"
                ) from exc
            if response.isError():
                raise PlcError(
                    f"PLC {self.plc.id}: read {block.start}+{block.count} answered {response}"
                )
            values.update(block.values(list(response.registers)))
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
