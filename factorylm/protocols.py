"""The PLC protocols the product speaks: the one registry of what the plant file, the drivers
and the people-facing text need to know about each.

Adding a protocol: a member of `Protocol`, one `ProtocolSpec` in PROTOCOLS, its driver module in
factorylm/drivers/ and its simulated peer in the simulator's registry (dev/simulator/peers.py);
docs/extending.md has the checklist. Drivers are named "module:Class" and imported when a PLC
of that protocol is first polled, so a plant without S7 PLCs never imports snap7.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol as TypingProtocol


class Protocol(StrEnum):
    MODBUS_TCP = "modbus_tcp"
    MODBUS_RTU = "modbus_rtu"
    S7 = "s7"
    LOGIX = "logix"


class PointAddress(TypingProtocol):
    """The address fields of a plant-file point (factorylm.plant.Point)."""

    @property
    def type(self) -> str: ...
    @property
    def address(self) -> int | None: ...
    @property
    def db(self) -> int | None: ...
    @property
    def offset(self) -> int | None: ...
    @property
    def bit(self) -> int | None: ...
    @property
    def tag(self) -> str | None: ...


@dataclass(frozen=True)
class ProtocolSpec:
    label: str  # for people: "Modbus TCP"
    default_port: int | None  # None: not spoken over TCP (a serial line)
    point_types: frozenset[str]  # the `type:` values a point of this protocol may have
    # What a point lacks to be addressable ("register", "db and offset"), or None.
    missing_address: Callable[[PointAddress], str | None]
    driver: str  # "module:Class", a factorylm.drivers.PlcDriver
    needs_serial_port: bool = False
    # A protocol's own rule for a point, as the error to show, or None.
    check_point: Callable[[PointAddress], str | None] = lambda _point: None
    # A push protocol's collector as "module:Class" (an ingest.collector.CollectorBase with
    # Collector's constructor), which receives what the peer sends instead of polling; None:
    # the polling Collector calls the driver's read_points every poll_interval_ms.
    collector: str | None = None


MODBUS_TYPES = frozenset({"u16", "i16", "u32", "i32", "f32"})
PLC_TYPES = frozenset({"real", "int", "dint", "bool"})


def _modbus_address(point: PointAddress) -> str | None:
    return "register" if point.address is None else None


def _s7_address(point: PointAddress) -> str | None:
    return "db and offset" if point.db is None or point.offset is None else None


def _s7_bool_bit(point: PointAddress) -> str | None:
    return "an S7 bool needs bit (0-7)" if point.type == "bool" and point.bit is None else None


def _logix_address(point: PointAddress) -> str | None:
    return "tag" if not point.tag else None


PROTOCOLS: dict[Protocol, ProtocolSpec] = {
    Protocol.MODBUS_TCP: ProtocolSpec(
        "Modbus TCP", 502, MODBUS_TYPES, _modbus_address, "factorylm.drivers.modbus:ModbusTcpDriver"
    ),
    Protocol.MODBUS_RTU: ProtocolSpec(
        "Modbus RTU",
        None,
        MODBUS_TYPES,
        _modbus_address,
        "factorylm.drivers.modbus:ModbusRtuDriver",
        needs_serial_port=True,
    ),
    Protocol.S7: ProtocolSpec(
        "Siemens S7",
        102,
        PLC_TYPES,
        _s7_address,
        "factorylm.drivers.s7:S7Driver",
        check_point=_s7_bool_bit,
    ),
    Protocol.LOGIX: ProtocolSpec(
        "EtherNet/IP (Logix)",
        44818,
        PLC_TYPES,
        _logix_address,
        "factorylm.drivers.logix:LogixDriver",
    ),
}


def spec(protocol: Protocol) -> ProtocolSpec:
    return PROTOCOLS[protocol]
