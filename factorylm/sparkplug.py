"""Sparkplug B: the payload codec, the topic namespace and an edge node's session state.

The payload is a protobuf message. Rather than generated code (which ties the product to one
protoc version) the schema is declared here, from the Sparkplug B specification's payload
definition, as a protobuf descriptor built at import time; `protobuf`'s message factory turns
it into message classes. Only what FactoryLM reads or writes is declared: the payload's
timestamp, metrics and sequence number, and per metric its name, alias, timestamp, datatype,
null flag and scalar values. Fields it does not declare (metadata, property sets, data sets,
templates) are skipped by the decoder, as protobuf skips any unknown field.

Topics: `spBv1.0/<group>/<type>/<edge node>[/<device>]`, type one of NBIRTH, NDEATH, NDATA,
NCMD, DBIRTH, DDEATH, DDATA, DCMD. Each message an edge node publishes after its NBIRTH (seq 0)
carries the next sequence number modulo 256; a gap means a message was lost, and the host asks
for a rebirth (NCMD with the boolean metric "Node Control/Rebirth").
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BDSEQ = "bdSeq"
MAX_PAYLOAD = 1 << 20  # bytes; a payload larger than this is refused before decoding


class SparkplugError(ValueError):
    """A payload or topic that is not Sparkplug B (the message says what is wrong)."""


class MessageType(StrEnum):
    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    NDATA = "NDATA"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    DDATA = "DDATA"
    DCMD = "DCMD"
    STATE = "STATE"


class DataType(IntEnum):
    """The Sparkplug B basic datatypes FactoryLM reads and writes (spec, "Datatypes")."""

    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14


_DATATYPES = {int(d): d for d in DataType}
_INT32_FIELD = {DataType.INT8, DataType.INT16, DataType.INT32, DataType.UINT8}
_INT32_FIELD |= {DataType.UINT16, DataType.UINT32}
_INT64_FIELD = {DataType.INT64, DataType.UINT64, DataType.DATETIME}


def _schema() -> descriptor_pb2.FileDescriptorProto:
    F = descriptor_pb2.FieldDescriptorProto
    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    proto = descriptor_pb2.FileDescriptorProto(
        name="factorylm/sparkplug_b.proto", package="factorylm.sparkplug", syntax="proto2"
    )
    payload = proto.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    metric.oneof_decl.add(name="value")
    for name, number, kind in (
        ("name", 1, F.TYPE_STRING),
        ("alias", 2, F.TYPE_UINT64),
        ("timestamp", 3, F.TYPE_UINT64),
        ("datatype", 4, F.TYPE_UINT32),
        ("is_historical", 5, F.TYPE_BOOL),
        ("is_transient", 6, F.TYPE_BOOL),
        ("is_null", 7, F.TYPE_BOOL),
    ):
        metric.field.add(name=name, number=number, label=opt, type=kind)
    for name, number, kind in (
        ("int_value", 10, F.TYPE_UINT32),
        ("long_value", 11, F.TYPE_UINT64),
        ("float_value", 12, F.TYPE_FLOAT),
        ("double_value", 13, F.TYPE_DOUBLE),
        ("boolean_value", 14, F.TYPE_BOOL),
        ("string_value", 15, F.TYPE_STRING),
        ("bytes_value", 16, F.TYPE_BYTES),
    ):
        metric.field.add(name=name, number=number, label=opt, type=kind, oneof_index=0)
    payload.field.add(name="timestamp", number=1, label=opt, type=F.TYPE_UINT64)
    payload.field.add(
        name="metrics",
        number=2,
        label=rep,
        type=F.TYPE_MESSAGE,
        type_name=".factorylm.sparkplug.Payload.Metric",
    )
    payload.field.add(name="seq", number=3, label=opt, type=F.TYPE_UINT64)
    payload.field.add(name="uuid", number=4, label=opt, type=F.TYPE_STRING)
    payload.field.add(name="body", number=5, label=opt, type=F.TYPE_BYTES)
    return proto


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_schema())
_PAYLOAD: Any = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName("factorylm.sparkplug.Payload")
)


class SpMetric(NamedTuple):
    """One metric of a payload. `value` is None for a null metric (or a non-numeric one that
    FactoryLM does not store: a string, bytes). A tuple: the ingest makes one per value."""

    name: str | None
    alias: int | None
    datatype: DataType | None
    value: float | None
    timestamp_ms: int | None = None
    is_null: bool = False


@dataclass(frozen=True)
class SpPayload:
    timestamp_ms: int | None
    seq: int | None
    metrics: tuple[SpMetric, ...]


def now_ms() -> int:
    return int(time.time() * 1000)


def _from_unsigned(raw: int, datatype: DataType | None) -> int:
    """Signed integers travel in the unsigned fields as two's complement: Int8/16/32 of the
    32-bit int_value, Int64 of the 64-bit long_value."""
    if datatype in (DataType.INT8, DataType.INT16, DataType.INT32) and raw >= 1 << 31:
        return raw - (1 << 32)
    if datatype is DataType.INT64 and raw >= 1 << 63:
        return raw - (1 << 64)
    return raw


def decode(data: bytes) -> SpPayload:
    """A Sparkplug B payload, or SparkplugError (never another exception) saying why not."""
    if len(data) > MAX_PAYLOAD:
        raise SparkplugError(f"payload of {len(data)} bytes is larger than {MAX_PAYLOAD}")
    message = _PAYLOAD()
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise SparkplugError(f"not a Sparkplug B payload ({exc})") from None
    metrics = []
    for m in message.metrics:
        # Field 0 is no value in each of these (Sparkplug's datatype 0 is "Unknown", a metric
        # name is never empty, a timestamp of 0 is no time), so no HasField call is needed.
        datatype = _DATATYPES.get(m.datatype)
        kind = m.WhichOneof("value")
        value: float | None
        if kind is None or m.is_null:
            value = None
        elif kind == "double_value" or kind == "float_value":
            value = float(getattr(m, kind))
        elif kind == "int_value" or kind == "long_value":
            value = float(_from_unsigned(getattr(m, kind), datatype))
        elif kind == "boolean_value":
            value = 1.0 if m.boolean_value else 0.0
        else:
            value = None
        metrics.append(
            SpMetric(
                m.name or None,
                m.alias if m.HasField("alias") else None,
                datatype,
                value,
                m.timestamp or None,
                m.is_null,
            )
        )
    return SpPayload(
        timestamp_ms=message.timestamp if message.HasField("timestamp") else None,
        seq=message.seq if message.HasField("seq") else None,
        metrics=tuple(metrics),
    )


def _set_value(m: Any, datatype: DataType, value: float | bool | str) -> None:
    if datatype is DataType.BOOLEAN:
        m.boolean_value = bool(value)
    elif datatype is DataType.FLOAT:
        m.float_value = float(value)
    elif datatype is DataType.DOUBLE:
        m.double_value = float(value)
    elif datatype in (DataType.STRING, DataType.TEXT):
        m.string_value = str(value)
    elif datatype in _INT32_FIELD or datatype in _INT64_FIELD:
        number = float(value)
        if not math.isfinite(number) or number != int(number):
            raise SparkplugError(f"{value!r} is not an integer for a {datatype.name} metric")
        raw = int(number)
        bits = 64 if datatype in _INT64_FIELD else 32
        if raw < 0:
            raw += 1 << bits
        if not 0 <= raw < 1 << bits:
            raise SparkplugError(f"{value!r} does not fit a {datatype.name} metric")
        if datatype in _INT64_FIELD:
            m.long_value = raw
        else:
            m.int_value = raw
    else:
        raise SparkplugError(f"cannot encode a {datatype.name} metric")


@dataclass(frozen=True)
class OutMetric:
    """A metric to encode: by name (births, commands) and/or alias (data messages)."""

    name: str | None
    datatype: DataType
    value: float | bool | str | None
    alias: int | None = None
    timestamp_ms: int | None = None


def encode(metrics: list[OutMetric], *, seq: int | None, timestamp_ms: int | None = None) -> bytes:
    message = _PAYLOAD()
    message.timestamp = timestamp_ms if timestamp_ms is not None else now_ms()
    if seq is not None:
        message.seq = seq % 256
    for out in metrics:
        m = message.metrics.add()
        if out.name is not None:
            m.name = out.name
        if out.alias is not None:
            m.alias = out.alias
        m.timestamp = out.timestamp_ms if out.timestamp_ms is not None else message.timestamp
        m.datatype = int(out.datatype)
        if out.value is None:
            m.is_null = True
        else:
            _set_value(m, out.datatype, out.value)
    data: bytes = message.SerializeToString()
    return data


def rebirth_request() -> bytes:
    """The NCMD payload asking an edge node to publish its births again."""
    return encode([OutMetric(REBIRTH, DataType.BOOLEAN, True)], seq=None)


# -- topics ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Topic:
    group: str
    type: MessageType
    node: str
    device: str | None = None

    def __str__(self) -> str:
        tail = f"/{self.device}" if self.device else ""
        return f"{NAMESPACE}/{self.group}/{self.type}/{self.node}{tail}"


def parse_topic(topic: str) -> Topic:
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE:
        raise SparkplugError(f"{topic!r} is not a Sparkplug B topic")
    try:
        kind = MessageType(parts[2])
    except ValueError:
        raise SparkplugError(f"{topic!r}: unknown message type {parts[2]!r}") from None
    is_device = kind.value.startswith("D")
    if is_device != (len(parts) == 5):
        raise SparkplugError(
            f"{topic!r}: a {kind} topic {'needs' if is_device else 'has no'} device"
        )
    return Topic(parts[1], kind, parts[3], parts[4] if len(parts) == 5 else None)


def node_subscriptions(group: str, node: str) -> list[str]:
    """The filters that receive everything an edge node and its devices publish."""
    return [f"{NAMESPACE}/{group}/+/{node}", f"{NAMESPACE}/{group}/+/{node}/+"]


# -- an edge node as the host sees it ---------------------------------------------------------------
@dataclass
class NodeSession:
    """What a host application knows of one edge node between its births: the metrics of the
    node and of each device (alias → name, name → datatype), and the last sequence number.

    `accept` says what to do with a message: its samples, or why it was not taken."""

    group: str
    node: str
    seq: int | None = None
    born: bool = False
    aliases: dict[tuple[str | None, int], str] = field(default_factory=dict)
    datatypes: dict[tuple[str | None, str], DataType] = field(default_factory=dict)
    online_devices: set[str] = field(default_factory=set)
    bd_seq: int | None = None  # the birth/death sequence of the NBIRTH in force

    def is_current_death(self, payload: SpPayload) -> bool:
        """Whether an NDEATH ends the session in force. Its bdSeq names the connection whose
        will it is: a node that reconnected quickly is born again before the broker publishes
        the old connection's will, and that late death must not kill the new session."""
        bd_seq = next(
            (int(m.value) for m in payload.metrics if m.name == BDSEQ and m.value is not None),
            None,
        )
        return bd_seq is None or self.bd_seq is None or bd_seq == self.bd_seq

    def check_seq(self, seq: int | None) -> str | None:
        """None when `seq` follows the last one; otherwise what is wrong. A repeat of the last
        number is a redelivered message (QoS 1 is at least once) and says "duplicate"."""
        if seq is None:
            return "no sequence number"
        if self.seq is None:
            return "no birth seen"
        if seq == self.seq:
            return "duplicate"
        expected = (self.seq + 1) % 256
        if seq != expected:
            return f"sequence gap: expected {expected}, got {seq}"
        return None

    def birth(self, device: str | None, payload: SpPayload, *, record: bool = True) -> None:
        """A node's (device None) or a device's birth. `record` False: a device this host does
        not read, whose aliases are not kept (a node announcing ever new devices must not grow
        the host's memory); its birth still counts in the sequence."""
        if device is None:
            # A node birth starts everything afresh, its devices' births follow.
            self.aliases.clear()
            self.datatypes.clear()
            self.online_devices.clear()
            self.born = True
            self.bd_seq = next(
                (int(m.value) for m in payload.metrics if m.name == BDSEQ and m.value is not None),
                None,
            )
        else:
            self.online_devices.add(device)
            for key in [k for k in self.aliases if k[0] == device]:
                del self.aliases[key]
            if not record:
                self.seq = payload.seq
                return
        for m in payload.metrics:
            if m.name is None:
                continue
            if m.alias is not None:
                self.aliases[(device, m.alias)] = m.name
            if m.datatype is not None:
                self.datatypes[(device, m.name)] = m.datatype
        self.seq = payload.seq

    def name_of(self, device: str | None, metric: SpMetric) -> str | None:
        if metric.name is not None:
            return metric.name
        if metric.alias is None:
            return None
        return self.aliases.get((device, metric.alias))

    def death(self) -> None:
        # The next birth may assign the aliases afresh: none of the old ones holds meanwhile.
        self.born = False
        self.seq = None
        self.online_devices.clear()
        self.aliases.clear()
        self.datatypes.clear()
