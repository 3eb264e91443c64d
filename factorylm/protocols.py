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
    OPCUA = "opcua"
    SPARKPLUG_B = "sparkplug_b"  # an MQTT Sparkplug B edge node (or one of its devices)
    MQTT_JSON = "mqtt_json"  # plain JSON messages on MQTT topics


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
    @property
    def node_id(self) -> str | None: ...
    @property
    def browse_path(self) -> str | None: ...
    @property
    def topic(self) -> str | None: ...
    @property
    def json_path(self) -> str | None: ...


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
    # A protocol's rule for the PLC entry itself (e.g. a Sparkplug group and edge node), as the
    # error to show, or None. It gets the factorylm.plant.Plc.
    check_plc: Callable[[object], str | None] = lambda _plc: None
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


OPCUA_TYPES = frozenset(
    {"double", "float", "int16", "uint16", "int32", "uint32", "int64", "uint64", "byte", "sbyte"}
    | {"boolean"}
)


def _opcua_address(point: PointAddress) -> str | None:
    return "node_id or browse_path" if not point.node_id and not point.browse_path else None


def _opcua_one_address(point: PointAddress) -> str | None:
    if point.node_id and point.browse_path:
        return "give node_id or browse_path, not both"
    return None


def _json_address(point: PointAddress) -> str | None:
    return "topic and json_path" if not point.topic or not point.json_path else None


def _sparkplug_node(plc: object) -> str | None:
    if not getattr(plc, "group", None) or not getattr(plc, "edge_node", None):
        return "a sparkplug_b PLC needs group and edge_node (its Sparkplug group and node ids)"
    return None


# Sparkplug metrics carry their own datatype (from the birth); `type` is only what a write
# encodes when no birth has declared one. JSON values are numbers or booleans.
MQTT_TYPES = PLC_TYPES | MODBUS_TYPES

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
    Protocol.OPCUA: ProtocolSpec(
        "OPC UA",
        4840,
        OPCUA_TYPES,
        _opcua_address,
        "factorylm.drivers.opcua:OpcUaDriver",
        check_point=_opcua_one_address,
        collector="ingest.subscription:OpcUaCollector",
    ),
    Protocol.SPARKPLUG_B: ProtocolSpec(
        "MQTT Sparkplug B",
        1883,
        MQTT_TYPES,
        lambda _point: None,  # the metric name defaults to the point's name
        "factorylm.drivers.mqtt:SparkplugDriver",
        check_plc=_sparkplug_node,
        collector="ingest.mqtt_collector:SparkplugCollector",
    ),
    Protocol.MQTT_JSON: ProtocolSpec(
        "MQTT JSON",
        1883,
        MQTT_TYPES,
        _json_address,
        "factorylm.drivers.mqtt:MqttJsonDriver",
        collector="ingest.mqtt_collector:MqttJsonCollector",
    ),
}


def spec(protocol: Protocol) -> ProtocolSpec:
    return PROTOCOLS[protocol]
