"""MQTT drivers: a Sparkplug B edge node (or one of its devices) and plain JSON topics.

MQTT is push: the ingest receives with its own collector (ingest/mqtt_collector.py). These
drivers are what the PLC-edge worker uses for a write and its read-back, with the same
`PlcDriver` contract as every other protocol:

- `read_points` returns each point's latest value the broker delivered. On connecting to a
  Sparkplug node the driver asks for a rebirth (NCMD "Node Control/Rebirth") so it learns
  every metric's current value and datatype at once instead of waiting for a change.
- `write_point` publishes a DCMD (a device's metric) or NCMD (the node's) with the metric by
  name and the datatype the birth declared. The next `read_points` of that metric waits for the
  next DDATA/NDATA (or birth) carrying it: the read-back is what the edge node reports after
  the command, never the value the driver sent.
- JSON topics are read-only: a JSON message has no command path or read-back contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import ssl
import time
from collections.abc import Callable
from functools import partial
from typing import Protocol

import aiomqtt

from factorylm import sparkplug as sp
from factorylm.drivers import PlcError
from factorylm.plant import Plc, Point

log = logging.getLogger(__name__)

MAX_JSON_PAYLOAD = 256 * 1024  # bytes; a larger JSON message is refused before parsing

_TYPE_OF_POINT = {
    "bool": sp.DataType.BOOLEAN,
    "real": sp.DataType.FLOAT,
    "f32": sp.DataType.FLOAT,
    "int": sp.DataType.INT16,
    "i16": sp.DataType.INT16,
    "u16": sp.DataType.UINT16,
    "dint": sp.DataType.INT32,
    "i32": sp.DataType.INT32,
    "u32": sp.DataType.UINT32,
}


def datatype_of(point: Point) -> sp.DataType:
    return _TYPE_OF_POINT.get(point.type, sp.DataType.DOUBLE)


class Broker(Protocol):
    """A broker as the plant file names it: a PLC entry or the publisher's `publish:`."""

    @property
    def id(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def tcp_port(self) -> int: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password_env(self) -> str | None: ...
    @property
    def tls(self) -> bool: ...
    @property
    def ca_file(self) -> str | None: ...
    @property
    def timeout_ms(self) -> int: ...


def broker_password(plc: Broker) -> str | None:
    if plc.password_env is None:
        return None
    password = os.environ.get(plc.password_env)
    if password is None:
        raise PlcError(
            f"{plc.id}: the environment variable {plc.password_env} (its broker password) "
            "is not set"
        )
    return password


def mqtt_client(
    plc: Broker,
    identifier: str,
    *,
    persistent: bool,
    will: aiomqtt.Will | None = None,
    max_queued_incoming: int | None = None,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
) -> aiomqtt.Client:
    """An MQTT 3.1.1 client for the PLC's broker. A persistent client keeps its session (clean
    session off), so the broker queues what arrives for its QoS 1 subscriptions while it is
    disconnected, until the broker's own session expiry (Mosquitto:
    `persistent_client_expiration`, none by default).

    Not MQTT 5, although its session expiry would be the client's to choose: paho builds a
    Properties object for every message an MQTT 5 client receives, which cost more than all
    of the ingest's own work per message (decoding, aliases, the writer, the detector) and cut
    the Sparkplug ingest's rate to about a third (docs/ingest.md, the benchmark)."""
    tls: ssl.SSLContext | None = None
    if plc.tls:
        try:
            tls = ssl.create_default_context(cafile=plc.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise PlcError(f"{plc.id}: cannot load ca_file {plc.ca_file}: {exc}") from exc
    return aiomqtt.Client(
        plc.host,
        plc.tcp_port,
        username=plc.username,
        password=broker_password(plc),
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=not persistent,
        tls_context=tls,
        will=will,
        keepalive=15,
        timeout=max(plc.timeout_ms / 1000, 1.0),
        max_queued_incoming_messages=max_queued_incoming,
        queue_type=queue_type,
    )


def json_value(payload: bytes, path: str) -> float:
    """The number at `path` ("a.b.0.c") in a JSON message; ValueError saying why not."""
    if len(payload) > MAX_JSON_PAYLOAD:
        raise ValueError(f"message of {len(payload)} bytes is larger than {MAX_JSON_PAYLOAD}")
    try:
        node: object = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    for key in path.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise ValueError(f"no field {path!r}")
    if isinstance(node, bool):
        return 1.0 if node else 0.0
    if isinstance(node, int | float):
        return float(node)
    raise ValueError(f"{path!r} is {type(node).__name__}, not a number")


class _MqttDriver:
    """Connects once, keeps the latest value of each point as messages arrive."""

    def __init__(self, plc: Plc, *, timeout_s: float = 2.0) -> None:
        self.plc = plc
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._changed = asyncio.Condition()
        self._values: dict[str, float] = {}
        self._versions: dict[str, int] = {}
        self._error: str | None = None

    def _identifier(self) -> str:
        return f"factorylm-edge-{self.plc.id}-{os.getpid()}"

    def _filters(self) -> list[str]:
        raise NotImplementedError

    def _handle(self, topic: str, payload: bytes) -> dict[str, float]:
        raise NotImplementedError

    async def _on_connected(self, client: aiomqtt.Client) -> None:
        """After subscribing: what the protocol does on every (re)connection."""

    async def connect(self) -> None:
        if self._task is None or self._task.done():
            self._connected.clear()
            self._task = asyncio.create_task(self._run(), name=f"mqtt-driver-{self.plc.id}")
        try:
            await asyncio.wait_for(self._connected.wait(), self._timeout_s)
        except TimeoutError:
            raise PlcError(
                f"PLC {self.plc.id}: broker {self.plc.host}:{self.plc.tcp_port} did not accept "
                f"a connection within {self._timeout_s:g} s ({self._error or 'no answer'})"
            ) from None

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                async with mqtt_client(self.plc, self._identifier(), persistent=False) as client:
                    for topic in self._filters():
                        await client.subscribe(topic, qos=1)
                    self._client = client
                    self._error = None
                    self._connected.set()
                    backoff = 0.2
                    await self._on_connected(client)
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes | bytearray):
                            continue
                        changed = self._handle(message.topic.value, bytes(payload))
                        if changed:
                            async with self._changed:
                                for name, value in changed.items():
                                    self._values[name] = value
                                    self._versions[name] = self._versions.get(name, 0) + 1
                                self._changed.notify_all()
            except aiomqtt.MqttError as exc:
                self._error = str(exc)
            except PlcError as exc:
                self._error = str(exc)
            self._client = None
            self._connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._client = None
        self._connected.clear()

    async def _wait(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self._timeout_s
        async with self._changed:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PlcError(f"PLC {self.plc.id}: {what} within {self._timeout_s:g} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), left)

    async def read_points(self, points: list[Point]) -> dict[str, float]:
        await self.connect()
        out: dict[str, float] = {}
        for point in points:
            key = self._key(point)
            await self._wait(f"no value of {point.name} arrived", partial(self._has, key))
            out[point.name] = self._values[key]
        return out

    def _has(self, key: str) -> bool:
        return key in self._values

    def _reported_after(self, key: str, version: int) -> bool:
        return self._versions.get(key, 0) > version

    def _key(self, point: Point) -> str:
        return point.name

    async def write_point(self, point: Point, value: float) -> None:
        raise PlcError(f"PLC {self.plc.id}: {self.plc.protocol} points are read-only")


class MqttJsonDriver(_MqttDriver):
    """Plain JSON topics: each point is the number at its json_path on its topic."""

    def _filters(self) -> list[str]:
        return sorted({p.topic for p in [*self.plc.metrics, *self.plc.setpoints] if p.topic})

    def _handle(self, topic: str, payload: bytes) -> dict[str, float]:
        out: dict[str, float] = {}
        for point in [*self.plc.metrics, *self.plc.setpoints]:
            if point.topic == topic and point.json_path:
                with contextlib.suppress(ValueError):
                    out[point.name] = json_value(payload, point.json_path)
        return out


class SparkplugDriver(_MqttDriver):
    """One Sparkplug edge node, or one device of it (`device:` in the plant file)."""

    def __init__(self, plc: Plc, *, timeout_s: float = 2.0) -> None:
        super().__init__(plc, timeout_s=timeout_s)
        assert plc.group is not None and plc.edge_node is not None  # the plant file checks
        self._session = sp.NodeSession(plc.group, plc.edge_node)
        self._pending: dict[str, int] = {}  # metric → its version when a command was sent

    def _filters(self) -> list[str]:
        return sp.node_subscriptions(self._session.group, self._session.node)

    def _has(self, key: str) -> bool:
        return key in self._values

    def _reported_after(self, key: str, version: int) -> bool:
        return self._versions.get(key, 0) > version

    def _key(self, point: Point) -> str:
        return point.sparkplug_name

    async def _on_connected(self, client: aiomqtt.Client) -> None:
        # Every metric's current value arrives in the births, without waiting for a change.
        await client.publish(self._topic(sp.MessageType.NCMD, None), sp.rebirth_request())

    def _topic(self, kind: sp.MessageType, device: str | None) -> str:
        return str(sp.Topic(self._session.group, kind, self._session.node, device))

    def _handle(self, topic: str, payload: bytes) -> dict[str, float]:
        try:
            parsed = sp.parse_topic(topic)
            if parsed.type in (sp.MessageType.NCMD, sp.MessageType.DCMD):
                return {}
            message = sp.decode(payload)
        except sp.SparkplugError:
            return {}  # the ingest counts and logs bad messages; the driver only needs values
        session = self._session
        if parsed.type is sp.MessageType.NDEATH:
            if not session.is_current_death(message):
                return {}
            session.death()
            self._values.clear()
            return {}
        if parsed.type is sp.MessageType.DDEATH and parsed.device == self.plc.device:
            self._values.clear()
            return {}
        if parsed.type is sp.MessageType.NBIRTH:
            session.birth(None, message)
        elif parsed.type is sp.MessageType.DBIRTH:
            session.birth(parsed.device, message, record=parsed.device == self.plc.device)
        elif parsed.type not in (sp.MessageType.NDATA, sp.MessageType.DDATA):
            return {}
        if parsed.device != self.plc.device:
            return {}
        out: dict[str, float] = {}
        for metric in message.metrics:
            name = session.name_of(parsed.device, metric)
            if name is not None and metric.value is not None and math.isfinite(metric.value):
                out[name] = metric.value
        return out

    async def read_points(self, points: list[Point]) -> dict[str, float]:
        await self.connect()
        out: dict[str, float] = {}
        for point in points:
            key = point.sparkplug_name
            sent = self._pending.get(key)
            if sent is not None:
                # The read-back: the first report of this metric after the command.
                await self._wait(
                    f"the edge node did not report {point.name} after the command",
                    partial(self._reported_after, key, sent),
                )
                del self._pending[key]
            else:
                await self._wait(
                    f"no value of {point.name} arrived (edge node {self._session.node} "
                    "offline or not born)",
                    partial(self._has, key),
                )
            out[point.name] = self._values[key]
        return out

    async def write_point(self, point: Point, value: float) -> None:
        await self.connect()
        client = self._client
        if client is None:
            raise PlcError(f"PLC {self.plc.id}: not connected to the broker")
        device = self.plc.device
        if not self._session.born or (device and device not in self._session.online_devices):
            raise PlcError(f"PLC {self.plc.id}: the edge node is offline; not written")
        name = point.sparkplug_name
        datatype = self._session.datatypes.get((device, name), datatype_of(point))
        try:
            payload = sp.encode([sp.OutMetric(name, datatype, value)], seq=None)
        except sp.SparkplugError as exc:
            raise PlcError(f"PLC {self.plc.id}: {name}: {exc}") from exc
        kind = sp.MessageType.DCMD if device else sp.MessageType.NCMD
        self._pending[name] = self._versions.get(name, 0)
        try:
            # Sparkplug sends commands at QoS 0; the read-back is what proves the write.
            await client.publish(self._topic(kind, device), payload, qos=0)
        except aiomqtt.MqttError as exc:
            del self._pending[name]
            raise PlcError(f"PLC {self.plc.id}: command not sent: {exc}") from exc
        log.info("PLC %s: %s %s = %s sent", self.plc.id, kind, name, value)
