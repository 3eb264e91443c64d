"""FactoryLM's own events on the plant's MQTT broker, so its SCADA or unified namespace sees
what FactoryLM does: drift alarms, approvals requested and answered, PLC writes, work orders.

Where the events come from: the audit tables the workflows' activities already write, each
row once and durably (drift_events, approval_requests, plc_writes, work_orders). The publisher
reads them after a cursor every `interval_ms` and publishes each new row at QoS 1; nothing in
the workflows or activities changes, and an event is published only once it is committed,
never for an activity attempt that failed. A NOTIFY from each activity would be quicker, but
NOTIFY is not kept for a listener that is away, and the tables are. The cursor itself is kept
on the broker, as a retained message under the namespace, written after the events it covers
were acknowledged: a restarted publisher goes on where it stopped (at least once: an event
can be published twice around a crash, and carries its own `event_id` to tell).

A first start (no cursor on the broker) publishes from then on, not the plant's history.
Rows are read only once they are `SETTLE_S` old, so a transaction that commits a little after
a later one is not skipped.

Topics, JSON format: `<namespace>/factorylm/<kind>/<plc id>` with kind drift_alarm,
approval_requested, approval_answered, plc_write, work_order (work orders without a PLC: `-`).
Sparkplug format: FactoryLM is an edge node `FactoryLM` of group `<namespace>`; its NBIRTH
declares one String metric per kind (`Events/<kind>`) and each event is an NDATA setting that
metric to the event's JSON. The approver's phone number is never published: only that the
request was answered, how, and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiomqtt
import asyncpg

from factorylm import sparkplug as sp
from factorylm.drivers import PlcError
from factorylm.drivers.mqtt import mqtt_client
from factorylm.plant import MqttPublish, Plant

log = logging.getLogger(__name__)

SETTLE_S = 2.0
BATCH = 500  # rows per source per round
NODE = "FactoryLM"


@dataclass(frozen=True)
class Source:
    kind: str
    # Rows after the cursor, oldest first; $1 the cursor's time, $2 its key, $3 settle, $4 limit.
    query: str


SOURCES: tuple[Source, ...] = (
    Source(
        "drift_alarm",
        """SELECT created_at AS created, lpad(id::text, 20, '0') AS key, plc_id, NULL AS action,
                  jsonb_build_object('event_id', 'drift_alarm/' || id, 'workflow_id',
                      workflow_id, 'plc_id', plc_id, 'metric', metric, 'sigma',
                      magnitude_sigma, 'window_mean', window_mean, 'baseline_mean',
                      baseline_mean, 'detected_at', detected_at) AS body
           FROM drift_events
           WHERE (created_at, lpad(id::text, 20, '0')) > ($1, $2)
             AND created_at < now() - $3 * interval '1 second'
           ORDER BY 1, 2 LIMIT $4""",
    ),
    Source(
        "approval_requested",
        """SELECT requested_at AS created, lpad(id::text, 20, '0') AS key,
                  NULL AS plc_id, action,
                  jsonb_build_object('event_id', 'approval_requested/' || id, 'workflow_id',
                      workflow_id, 'action', action, 'requested_at', requested_at) AS body
           FROM approval_requests
           WHERE (requested_at, lpad(id::text, 20, '0')) > ($1, $2)
             AND requested_at < now() - $3 * interval '1 second'
           ORDER BY 1, 2 LIMIT $4""",
    ),
    Source(
        "approval_answered",
        """SELECT answered_at AS created, lpad(id::text, 20, '0') AS key,
                  NULL AS plc_id, action,
                  jsonb_build_object('event_id', 'approval_answered/' || id, 'workflow_id',
                      workflow_id, 'action', action, 'status', status, 'answered_at',
                      answered_at) AS body
           FROM approval_requests
           WHERE answered_at IS NOT NULL
             AND (answered_at, lpad(id::text, 20, '0')) > ($1, $2)
             AND answered_at < now() - $3 * interval '1 second'
           ORDER BY 1, 2 LIMIT $4""",
    ),
    Source(
        "plc_write",
        """SELECT completed_at AS created, action_id AS key, plc_id, action,
                  jsonb_build_object('event_id', 'plc_write/' || action_id, 'workflow_id',
                      workflow_id, 'action', action, 'plc_id', plc_id, 'setpoint', target,
                      'status', status, 'value_before', value_before, 'value_written',
                      value_written, 'value_read_back', value_read_back, 'error', error,
                      'completed_at', completed_at) AS body
           FROM plc_writes
           WHERE completed_at IS NOT NULL AND (completed_at, action_id) > ($1, $2)
             AND completed_at < now() - $3 * interval '1 second'
           ORDER BY 1, 2 LIMIT $4""",
    ),
    Source(
        "work_order",
        """SELECT created_at AS created, lpad(id::text, 20, '0') AS key, asset_id AS plc_id,
                  NULL AS action,
                  jsonb_build_object('event_id', 'work_order/' || id, 'work_order_id',
                      'WO-' || lpad(id::text, 6, '0'), 'title', title, 'priority', priority,
                      'status', status, 'asset_id', asset_id, 'created_at', created_at) AS body
           FROM work_orders
           WHERE (created_at, lpad(id::text, 20, '0')) > ($1, $2)
             AND created_at < now() - $3 * interval '1 second'
           ORDER BY 1, 2 LIMIT $4""",
    ),
)
KINDS = tuple(s.kind for s in SOURCES)


def _topic_part(text: str | None) -> str:
    # A PLC id is [a-z0-9_-]; anything else (a free-text asset id) must not open a wildcard
    # or a new level in the plant's topic tree.
    if not text:
        return "-"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:100]


class EventPublisher:
    def __init__(
        self,
        plant: Plant,
        connect: Callable[[], Awaitable[asyncpg.Connection]] | asyncpg.Pool,
        *,
        settle_s: float = SETTLE_S,
    ) -> None:
        assert plant.publish is not None
        self.config: MqttPublish = plant.publish
        self.plant = plant
        self.namespace = (self.config.namespace or plant.name).strip("/")
        self._db = connect
        self._settle_s = settle_s
        # Below the event tree (<kind>/<plc>), so a subscriber to factorylm/+/+ sees no cursor.
        self.cursor_topic = f"{self.namespace}/factorylm/_state/publisher/cursor"
        self.cursors: dict[str, tuple[datetime, str]] = {}
        self.published: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._seq = 0

    # -- topics and payloads ----------------------------------------------------------------------
    def topic(self, kind: str, plc_id: str | None) -> str:
        if self.config.format == "sparkplug":
            return str(sp.Topic(self.namespace, sp.MessageType.NDATA, NODE))
        return f"{self.namespace}/factorylm/{kind}/{_topic_part(plc_id)}"

    def _payload(self, kind: str, body: dict[str, Any]) -> bytes:
        text = json.dumps(body, default=str, separators=(",", ":"))
        if self.config.format == "json":
            return text.encode()
        self._seq = (self._seq + 1) % 256
        return sp.encode([sp.OutMetric(f"Events/{kind}", sp.DataType.STRING, text)], seq=self._seq)

    async def _birth(self, client: aiomqtt.Client) -> None:
        if self.config.format != "sparkplug":
            return
        self._seq = 0
        metrics = [sp.OutMetric(sp.BDSEQ, sp.DataType.UINT64, 0)]
        metrics += [sp.OutMetric(f"Events/{k}", sp.DataType.STRING, "") for k in KINDS]
        topic = str(sp.Topic(self.namespace, sp.MessageType.NBIRTH, NODE))
        await client.publish(topic, sp.encode(metrics, seq=0), qos=1)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt-event-publisher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                will = None
                if self.config.format == "sparkplug":
                    death = sp.encode([sp.OutMetric(sp.BDSEQ, sp.DataType.UINT64, 0)], seq=None)
                    topic = str(sp.Topic(self.namespace, sp.MessageType.NDEATH, NODE))
                    will = aiomqtt.Will(topic, death, qos=1)
                async with mqtt_client(
                    self.config,
                    f"factorylm-publisher-{self.namespace}"[:200],
                    persistent=False,
                    will=will,
                ) as client:
                    await self._load_cursor(client)
                    await self._birth(client)
                    backoff = 0.5
                    while True:
                        await self.publish_new(client)
                        self.last_error = None
                        await asyncio.sleep(self.config.interval_ms / 1000)
            except (
                aiomqtt.MqttError,
                PlcError,
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
            ) as exc:
                if self.last_error is None:
                    log.warning("event publisher: %s; retrying", exc)
                self.last_error = str(exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _load_cursor(self, client: aiomqtt.Client) -> None:
        """The retained cursor, if the broker has one; else 'now' for every source."""
        if self.cursors:
            return  # this process's own cursor is the newest
        await client.subscribe(self.cursor_topic, qos=1)
        found: dict[str, Any] | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                async for message in client.messages:
                    if message.topic.value == self.cursor_topic and isinstance(
                        message.payload, bytes | bytearray
                    ):
                        with contextlib.suppress(ValueError):
                            found = json.loads(message.payload)
                        break
        await client.unsubscribe(self.cursor_topic)
        now = await self._fetchval("SELECT now()")
        for kind in KINDS:
            entry = found.get(kind) if isinstance(found, dict) else None
            if isinstance(entry, list) and len(entry) == 2:
                with contextlib.suppress(TypeError, ValueError):
                    self.cursors[kind] = (datetime.fromisoformat(entry[0]), str(entry[1]))
                    continue
            self.cursors[kind] = (now, "")
        log.info(
            "event publisher on %s:%d, namespace %s (%s), %s",
            self.config.host,
            self.config.tcp_port,
            self.namespace,
            self.config.format,
            "resuming from its cursor" if found else "from now on",
        )

    async def _fetchval(self, query: str) -> Any:
        if isinstance(self._db, asyncpg.Pool):
            return await self._db.fetchval(query)
        conn = await self._db()
        try:
            return await conn.fetchval(query)
        finally:
            await conn.close()

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        if isinstance(self._db, asyncpg.Pool):
            return list(await self._db.fetch(query, *args))
        conn = await self._db()
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def publish_new(self, client: aiomqtt.Client) -> int:
        """Publish every settled row after each source's cursor; then save the cursor."""
        sent = 0
        for source in SOURCES:
            since, key = self.cursors[source.kind]
            rows = await self._fetch(source.query, since, key, self._settle_s, BATCH)
            for row in rows:
                body = json.loads(row["body"]) if isinstance(row["body"], str) else row["body"]
                body["kind"] = source.kind
                plc_id = row["plc_id"]
                if plc_id is None and row["action"] is not None:
                    # An approval names its action; the catalog says which PLC it is for.
                    action = self.plant.action(row["action"])
                    plc_id = action.plc if action is not None else None
                await client.publish(
                    self.topic(source.kind, plc_id),
                    self._payload(source.kind, body),
                    qos=1,
                )
                self.cursors[source.kind] = (row["created"], row["key"])
                self.published[source.kind] += 1
                sent += 1
        if sent:
            cursor = {k: [t.isoformat(), key] for k, (t, key) in self.cursors.items()}
            await client.publish(self.cursor_topic, json.dumps(cursor), qos=1, retain=True)
        return sent
