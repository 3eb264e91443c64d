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


def driver_for(plc: Plc, *, timeout_s: float | None = None) -> PlcDriver:
    timeout = timeout_s if timeout_s is not None else plc.timeout_ms / 1000
    if plc.protocol is Protocol.MODBUS_TCP:
        from factorylm.drivers.modbus import ModbusTcpDriver

        return ModbusTcpDriver(plc, timeout_s=timeout)
    if plc.protocol is Protocol.MODBUS_RTU:
        from factorylm.drivers.modbus import ModbusRtuDriver

        return ModbusRtuDriver(plc, timeout_s=timeout)
    if plc.protocol is Protocol.S7:
        from factorylm.drivers.s7 import S7Driver

        return S7Driver(plc, timeout_s=timeout)
    if plc.protocol is Protocol.LOGIX:
        from factorylm.drivers.logix import LogixDriver

        return LogixDriver(plc, timeout_s=timeout)
    raise PlcError(f"PLC {plc.id}: protocol {plc.protocol} has no driver")
