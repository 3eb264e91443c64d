"""A simulated Sparkplug B edge node: it publishes its metrics to an MQTT broker (the demo's
Mosquitto) as a real edge node does.

On connecting it registers its NDEATH (with the session's bdSeq) as the MQTT will, publishes
NBIRTH (node metrics: bdSeq, "Node Control/Rebirth") and, when the plant entry names a
device, a DBIRTH; each birth declares every metric with a name, an alias and a datatype and
carries its current value. Then every tick one DDATA (or NDATA) names the changed sensor
metrics by alias only. Setpoints are reported by exception: only in the births and right after
a DCMD/NCMD changed them, so the first report after a command is its read-back. An NCMD
rebirth request makes it publish its births again (sequence restarted at 0).

Offline (a fault): it publishes its NDEATH and disconnects; back online it connects with the
next bdSeq and is born again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence

import aiomqtt

from dev.simulator.peer import SimulatedPeer
from factorylm import sparkplug as sp
from factorylm.drivers.mqtt import datatype_of, mqtt_client
from factorylm.plant import Plc, Point

log = logging.getLogger(__name__)


class SimulatedSparkplugNode(SimulatedPeer):
    protocol_label = "Sparkplug B"

    def __init__(self, plc: Plc, *, seed: int = 0, tick_s: float | None = None) -> None:
        # One data message per publish period (the plant entry's poll_interval_ms).
        super().__init__(plc, seed=seed, tick_s=tick_s or plc.poll_interval_ms / 1000)
        assert plc.group is not None and plc.edge_node is not None
        self.group, self.node, self.device = plc.group, plc.edge_node, plc.device
        points = [*plc.metrics, *plc.setpoints]
        self._alias = {p.name: i + 1 for i, p in enumerate(points)}  # 0 is no alias
        # Born with values: setpoints at nominal (their upper bound, as SimulatedPeer powers
        # them up) and sensors at their baseline, so no birth carries a null.
        self._memory: dict[str, float] = {s.name: s.max for s in plc.setpoints}
        for metric in plc.metrics:
            self._memory[metric.name] = metric.baseline.mean if metric.baseline else 0.0
        self._seq = 0
        self._bdseq = 0
        self._client: aiomqtt.Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._born = asyncio.Event()
        self._lock = asyncio.Lock()
        self.published = 0
        self.commands = 0

    @property
    def address(self) -> str:
        tail = f"/{self.device}" if self.device else ""
        return f"mqtt://{self.plc.host}:{self.plc.tcp_port} {self.group}/{self.node}{tail}"

    def _topic(self, kind: sp.MessageType, device: str | None = None) -> str:
        return str(sp.Topic(self.group, kind, self.node, device))

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 256
        return self._seq

    # -- connection ---------------------------------------------------------------------------
    async def _serve(self) -> None:
        self._born.clear()
        self._runner = asyncio.create_task(self._connection(), name=f"sparkplug-{self.plc.id}")
        try:
            await asyncio.wait_for(self._born.wait(), 10)
        except TimeoutError:
            await self._unserve()
            raise RuntimeError(f"{self.plc.id}: no broker at {self.address} accepted it") from None

    async def _unserve(self) -> None:
        runner, self._runner = self._runner, None
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.publish(self._topic(sp.MessageType.NDEATH), self._death(), qos=1)
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
        self._client = None
        self._bdseq = (self._bdseq + 1) % 256  # the next connection is a new session

    def _death(self) -> bytes:
        return sp.encode([sp.OutMetric(sp.BDSEQ, sp.DataType.UINT64, self._bdseq)], seq=None)

    async def _connection(self) -> None:
        while True:
            will = aiomqtt.Will(self._topic(sp.MessageType.NDEATH), self._death(), qos=1)
            try:
                client = mqtt_client(self.plc, f"sim-{self.plc.id}", persistent=False, will=will)
                async with client:
                    for kind in (sp.MessageType.NCMD, sp.MessageType.DCMD):
                        await client.subscribe(
                            f"{sp.NAMESPACE}/{self.group}/{kind}/{self.node}/#", qos=0
                        )
                    self._client = client
                    await self._births()
                    self._born.set()
                    async for message in client.messages:
                        if isinstance(message.payload, bytes | bytearray):
                            await self._command(message.topic.value, bytes(message.payload))
            except aiomqtt.MqttError as exc:
                log.warning("%s: broker connection lost (%s); reconnecting", self.plc.id, exc)
            self._client = None
            self._bdseq = (self._bdseq + 1) % 256
            await asyncio.sleep(0.5)

    async def _births(self) -> None:
        async with self._lock:
            await self._births_locked()

    async def _births_locked(self) -> None:
        client = self._client
        if client is None:
            return
        self._seq = 0
        node_metrics = [
            sp.OutMetric(sp.BDSEQ, sp.DataType.UINT64, self._bdseq),
            sp.OutMetric(sp.REBIRTH, sp.DataType.BOOLEAN, False),
        ]
        mine = [self._out(p, self._memory.get(p.name), name=True) for p in self._points()]
        if self.device is None:
            node_metrics += mine
        await client.publish(
            self._topic(sp.MessageType.NBIRTH), sp.encode(node_metrics, seq=0), qos=0
        )
        self.published += 1
        if self.device is not None:
            await client.publish(
                self._topic(sp.MessageType.DBIRTH, self.device),
                sp.encode(mine, seq=self._next_seq()),
                qos=0,
            )
            self.published += 1

    def _points(self) -> list[Point]:
        return [*self.plc.metrics, *self.plc.setpoints]

    def _out(self, point: Point, value: float | None, *, name: bool) -> sp.OutMetric:
        datatype = datatype_of(point)
        if value is not None and datatype not in (sp.DataType.FLOAT, sp.DataType.DOUBLE):
            value = round(value) if datatype is not sp.DataType.BOOLEAN else bool(value)
        return sp.OutMetric(
            point.sparkplug_name if name else None, datatype, value, alias=self._alias[point.name]
        )

    async def _data(self, values: Sequence[tuple[Point, float]]) -> None:
        client = self._client
        if client is None or not values:
            return
        kind = sp.MessageType.DDATA if self.device else sp.MessageType.NDATA
        metrics = [self._out(p, v, name=False) for p, v in values]
        await client.publish(
            self._topic(kind, self.device), sp.encode(metrics, seq=self._next_seq()), qos=0
        )
        self.published += 1

    # -- the PLC program ------------------------------------------------------------------------
    async def _store(self, values: Sequence[tuple[Point, float]]) -> None:
        async with self._lock:
            for point, value in values:
                self._memory[point.name] = value
            if self._born.is_set():
                try:
                    await self._data(values)
                except aiomqtt.MqttError as exc:
                    log.warning("%s: data not published (%s)", self.plc.id, exc)

    async def _command(self, topic: str, payload: bytes) -> None:
        try:
            parsed = sp.parse_topic(topic)
            message = sp.decode(payload)
        except sp.SparkplugError as exc:
            log.warning("%s: ignored a command on %s: %s", self.plc.id, topic, exc)
            return
        if parsed.type is sp.MessageType.NCMD and any(
            m.name == sp.REBIRTH and m.value for m in message.metrics
        ):
            await self._births()
            return
        if parsed.device != self.device:
            return
        changed: list[tuple[Point, float]] = []
        for metric in message.metrics:
            setpoint = next(
                (s for s in self.plc.setpoints if s.sparkplug_name == metric.name), None
            )
            if setpoint is None or metric.value is None or not math.isfinite(metric.value):
                log.warning("%s: refused a command for %s", self.plc.id, metric.name)
                continue
            # The PLC program clamps a command to the setpoint's range, as a real one would.
            changed.append((setpoint, min(max(metric.value, setpoint.min), setpoint.max)))
        if changed:
            self.commands += 1
            await self._store(changed)

    async def read(self, name: str) -> float:
        if name not in self._memory:
            raise KeyError(f"{self.plc.id} has no value for {name!r}")
        return self._memory[name]

    async def _set_answering(self, answering: bool) -> None:
        if answering:
            await self._serve()
        else:
            await self._unserve()

    async def rebirth(self) -> None:
        """Publish the births again, as after an NCMD rebirth request."""
        await self._births()
