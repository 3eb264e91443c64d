"""Push collectors for MQTT: Sparkplug B edge nodes and plain JSON topics.

Each PLC entry of protocol sparkplug_b or mqtt_json gets one of these in place of the polling
collector (factorylm.protocols names them). It keeps one MQTT connection with a fixed client
id and a persistent session (clean session off) and subscribes at QoS 1, so a short disconnect of the ingest or a broker restart (Mosquitto with persistence)
loses nothing: the broker queues what arrives and delivers it on reconnection.

Sparkplug B: births (NBIRTH, DBIRTH) declare each metric's name, alias and datatype and carry
the current values; data messages (NDATA, DDATA) usually name metrics by alias only. Every
message after the NBIRTH carries the next sequence number (mod 256). A gap means something was
lost: the collector keeps what it got and asks for a rebirth (NCMD "Node Control/Rebirth"),
at most once per REBIRTH_EVERY_S. A repeated number is a redelivery and is dropped. NDEATH (the
node's will, sent by the broker when the node vanishes) and DDEATH make the collector
"failing" until the next birth.

Bad input never stops the collector and never loses what was accepted: a payload that does not
decode, an alias no birth declared, a null or non-numeric value, a JSON message without the
point's field — each is counted as bad quality (`bad_samples`) and logged once per topic and
problem.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiomqtt

from factorylm import sparkplug as sp
from factorylm.drivers import PlcDriver, PlcError
from factorylm.drivers.mqtt import json_value, mqtt_client
from factorylm.plant import Plc
from ingest.collector import CollectorBase, SampleSink

log = logging.getLogger(__name__)

# At most one rebirth request per edge node in this time, unless a birth answered the last.
REBIRTH_EVERY_S = 2.0
PAYLOAD_ISSUE = "(payload)"  # the bad_samples key of messages that name no metric we can tell
# Messages received and not yet handled, at most (about 100 MB): an ingest that falls behind
# for longer than its queue lasts drops the newest, counted under QUEUE_FULL, rather than
# growing until the machine runs out of memory. The broker has acknowledged them already.
RECEIVE_QUEUE = 100_000
QUEUE_FULL = "(dropped: receive queue full)"
# One key for every alias no birth declared: keyed per alias, a node sending random aliases
# would grow bad_samples (and the status row) without bound.
UNDECLARED_ALIAS = "(undeclared alias)"


class _MqttCollector(CollectorBase):
    def __init__(
        self,
        plc: Plc,
        sink: SampleSink,
        *,
        driver: PlcDriver | None = None,
        max_backoff_s: float = 30.0,
        on_change: Callable[[CollectorBase], None] | None = None,
        phase_s: float = 0.0,
    ) -> None:
        super().__init__(
            plc, sink, max_backoff_s=max_backoff_s, on_change=on_change, phase_s=phase_s
        )
        # Stable across restarts of this process: the broker keeps the session under it.
        self.client_id = f"factorylm-ingest-{plc.id}"
        self.messages = 0
        self.connects = 0
        self._logged: set[tuple[str, str]] = set()

    def _filters(self) -> list[str]:
        raise NotImplementedError

    def _queue_type(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        collector = self

        class CountingQueue(asyncio.Queue[aiomqtt.Message]):
            def put_nowait(self, item: aiomqtt.Message) -> None:
                if self.full():
                    collector._issue(
                        QUEUE_FULL,
                        item.topic.value,
                        "receive queue full",
                        f"the ingest is {self.qsize()} messages behind; newest dropped",
                    )
                super().put_nowait(item)  # raises QueueFull: aiomqtt discards the message

        return CountingQueue

    def _receive(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        raise NotImplementedError

    async def _on_connected(self, client: aiomqtt.Client) -> None:
        """What the protocol does after (re)subscribing."""

    async def _alive(self) -> None:
        """While connected: keep `last_good` fresh from the protocol's own sign of life, if it
        has one (a JSON topic has none: silence there is staleness)."""

    def _issue(self, key: str, topic: str, problem: str, detail: str) -> None:
        """Count one bad value under `key`; log it once per topic and kind of problem."""
        self.bad_samples[key] = self.bad_samples.get(key, 0) + 1
        if (topic, problem) not in self._logged:
            if len(self._logged) < 10_000:  # bounded: a flood of bad topics is not a leak
                self._logged.add((topic, problem))
            log.warning(
                "PLC %s: %s on %s: %s; counted as bad quality (logged once)",
                self.plc.id,
                problem,
                topic,
                detail,
            )
            self._notify()

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                client = mqtt_client(
                    self.plc,
                    self.client_id,
                    persistent=True,
                    max_queued_incoming=RECEIVE_QUEUE,
                    queue_type=self._queue_type(),
                )
                async with client:
                    for topic in self._filters():
                        await client.subscribe(topic, qos=1)
                    self.connects += 1
                    backoff = 0.5
                    if self.connects > 1:
                        log.info("PLC %s: reconnected to the broker", self.plc.id)
                    await self._on_connected(client)
                    alive = asyncio.create_task(self._alive(), name=f"alive-{self.plc.id}")
                    try:
                        async for message in client.messages:
                            payload = message.payload
                            if not isinstance(payload, bytes | bytearray):
                                payload = b"" if payload is None else str(payload).encode()
                            self.messages += 1
                            self._receive(client, message.topic.value, bytes(payload))
                    finally:
                        alive.cancel()
                        await asyncio.gather(alive, return_exceptions=True)
            except (aiomqtt.MqttError, PlcError) as exc:
                where = f"{self.plc.host}:{self.plc.tcp_port}"
                self._failed(f"PLC {self.plc.id}: MQTT broker {where}: {exc}", backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)


class MqttJsonCollector(_MqttCollector):
    """JSON messages: each metric is the number at its json_path in messages on its topic."""

    def __init__(self, plc: Plc, sink: SampleSink, **kwargs: object) -> None:
        super().__init__(plc, sink, **kwargs)  # type: ignore[arg-type]
        self._by_topic: dict[str, list[tuple[str, str]]] = {}
        for metric in plc.metrics:
            assert metric.topic is not None and metric.json_path is not None  # plant file
            self._by_topic.setdefault(metric.topic, []).append((metric.name, metric.json_path))

    def _filters(self) -> list[str]:
        return sorted(self._by_topic)

    def _receive(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        mono = time.monotonic()
        values: dict[str, float] = {}
        for name, path in self._by_topic.get(topic, []):
            try:
                values[name] = json_value(payload, path)
            except ValueError as exc:
                self._issue(name, topic, f"{name} unreadable", str(exc))
        if values:
            self._deliver(datetime.now(UTC), mono, values)


class SparkplugCollector(_MqttCollector):
    """One Sparkplug B edge node, or one device of it (`device:` in the plant file)."""

    def __init__(self, plc: Plc, sink: SampleSink, **kwargs: object) -> None:
        super().__init__(plc, sink, **kwargs)  # type: ignore[arg-type]
        assert plc.group is not None and plc.edge_node is not None  # the plant file checks
        self.session = sp.NodeSession(plc.group, plc.edge_node)
        self.device = plc.device
        self._point_of = {m.sparkplug_name: m.name for m in plc.metrics}
        self._client: aiomqtt.Client | None = None
        self._last_rebirth = -math.inf
        self.rebirths_requested = 0
        self.gaps = 0
        self.duplicates = 0
        self._ncmd = str(sp.Topic(plc.group, sp.MessageType.NCMD, plc.edge_node))

    def _filters(self) -> list[str]:
        return sp.node_subscriptions(self.session.group, self.session.node)

    async def _on_connected(self, client: aiomqtt.Client) -> None:
        self._client = client
        if not self.session.born:
            # Started (or restarted) without the node's aliases: ask for them.
            self._request_rebirth("no birth seen yet")

    async def _alive(self) -> None:
        # Sparkplug says when a node is gone (NDEATH, sent by the broker when the node's
        # connection drops; DDEATH). Until then a node that reports by exception and whose
        # values do not change is alive, not stale: the health monitor must not restart it.
        while True:
            await asyncio.sleep(max(self.period_s, 1.0))
            session = self.session
            if session.born and (self.device is None or self.device in session.online_devices):
                self._mark_alive()

    def _request_rebirth(self, why: str) -> None:
        now = time.monotonic()
        client = self._client
        if client is None or now - self._last_rebirth < REBIRTH_EVERY_S:
            return
        self._last_rebirth = now
        self.rebirths_requested += 1
        log.info(
            "PLC %s: asking edge node %s for a rebirth (%s)", self.plc.id, self.session.node, why
        )
        task = asyncio.ensure_future(client.publish(self._ncmd, sp.rebirth_request(), qos=0))
        task.add_done_callback(_log_failure)

    def _receive(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        mono = time.monotonic()
        try:
            parsed = sp.parse_topic(topic)
        except sp.SparkplugError as exc:
            self._issue(PAYLOAD_ISSUE, topic, "not a Sparkplug topic", str(exc))
            return
        kind = parsed.type
        if kind in (sp.MessageType.NCMD, sp.MessageType.DCMD, sp.MessageType.STATE):
            return  # commands to the node (ours or another host's), not data
        try:
            message = sp.decode(payload)
        except sp.SparkplugError as exc:
            self._issue(PAYLOAD_ISSUE, topic, "undecodable payload", str(exc))
            if kind is not sp.MessageType.NDEATH:
                self._request_rebirth("undecodable payload")
            return
        session = self.session
        if kind is sp.MessageType.NDEATH:
            if not session.is_current_death(message):
                log.info(
                    "PLC %s: a late NDEATH of an earlier session of %s: ignored",
                    self.plc.id,
                    session.node,
                )
                return
            session.death()
            self._failed(f"PLC {self.plc.id}: edge node {session.node} is offline (NDEATH)", 0)
            return
        if kind is sp.MessageType.NBIRTH:
            session.birth(None, message)
            self._last_rebirth = -math.inf  # the birth answers any request: the next may go
            if self.device is None:
                self._take(parsed, message, mono)
            else:
                self._mark_alive()
            return
        problem = session.check_seq(message.seq)
        if problem == "duplicate":
            self.duplicates += 1
            return
        if problem is not None:
            if session.born:
                self.gaps += 1
                log.warning("PLC %s: %s on %s", self.plc.id, problem, topic)
            self._request_rebirth(problem)
            if message.seq is not None and session.born:
                session.seq = message.seq
        elif message.seq is not None:
            session.seq = message.seq
        if kind is sp.MessageType.DDEATH:
            if parsed.device is not None:
                session.online_devices.discard(parsed.device)
            if parsed.device == self.device:
                self._failed(
                    f"PLC {self.plc.id}: device {parsed.device} of {session.node} is offline "
                    "(DDEATH)",
                    0,
                )
            return
        if kind is sp.MessageType.DBIRTH:
            session.birth(parsed.device, message, record=parsed.device == self.device)
        if parsed.device != self.device:
            self._mark_alive()
            return
        self._take(parsed, message, mono)

    def _mark_alive(self) -> None:
        # A sign of life from the node, so a device whose values seldom change is not stale.
        if self.consecutive_errors == 0 and self.cycles > 0:
            self.last_good = datetime.now(UTC)

    def _take(self, parsed: sp.Topic, message: sp.SpPayload, mono: float) -> None:
        by_time: dict[int | None, dict[str, float]] = {}
        topic = str(parsed)
        for metric in message.metrics:
            name = self.session.name_of(parsed.device, metric)
            if name is None:
                if not self.session.born:
                    self._request_rebirth("data before any birth")
                    continue
                self._issue(
                    UNDECLARED_ALIAS,
                    topic,
                    "undeclared alias",
                    f"alias {metric.alias} was declared in no birth of {self.session.node}",
                )
                continue
            point = self._point_of.get(name)
            if point is None:
                continue  # a metric the plant file does not ask for
            if metric.value is None:
                why = "null" if metric.is_null else "not a number FactoryLM stores"
                self._issue(point, topic, f"{point} has no value", f"{name} is {why}")
                continue
            stamp = metric.timestamp_ms if metric.timestamp_ms is not None else message.timestamp_ms
            by_time.setdefault(stamp, {})[point] = metric.value
        if not by_time:
            self._mark_alive()
            return
        for stamp, values in sorted(by_time.items(), key=lambda kv: kv[0] or 0):
            self._deliver(_when(stamp), mono, values)


def _when(stamp_ms: int | None) -> datetime:
    """The edge node's timestamp; its receipt time if it has none or one no clock can mean
    (before 2000 or over a day ahead: a node whose clock was never set)."""
    now = datetime.now(UTC)
    if stamp_ms is None:
        return now
    try:
        when = datetime.fromtimestamp(stamp_ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return now
    if when.year < 2000 or (when - now).total_seconds() > 86_400:
        return now
    return when


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("rebirth request not sent: %s", task.exception())
