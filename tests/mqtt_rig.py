"""MQTT test rig: a real Mosquitto per test (dev/mosquitto.py), Sparkplug plant entries on it,
and a hand-driven edge node whose every message (sequence numbers, aliases, values) the test
chooses, so what the ingest must store is known without the code under test."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiomqtt

from dev.mosquitto import Mosquitto
from factorylm import sparkplug as sp
from factorylm.plant import Plc

GROUP = "plant"


def sparkplug_plc(broker: Mosquitto, plc_id: str, **extra: Any) -> Plc:
    """A Sparkplug device `filler` of edge node `edge-<plc_id>`: two metrics, one setpoint."""
    raw: dict[str, Any] = {
        "id": plc_id,
        "vendor": "sparkplug_edge",
        "protocol": "sparkplug_b",
        "port": broker.port,
        "group": GROUP,
        "edge_node": f"edge-{plc_id}",
        "device": "filler",
        "poll_interval_ms": 100,
        "metrics": [
            {"name": "speed", "metric": "Motor/Speed", "type": "real", "unit": "rpm"},
            {"name": "temp", "metric": "Motor/Temp", "type": "real", "unit": "degC"},
        ],
        "setpoints": [{"name": "run", "metric": "Motor/Run", "type": "bool", "min": 0, "max": 1}],
    }
    raw.update(extra)
    return Plc.model_validate(raw)


class Samples:
    """A collector sink that keeps what it was handed."""

    def __init__(self) -> None:
        self.rows: list[tuple[datetime, dict[str, float]]] = []

    def __call__(self, plc: Plc, when: datetime, mono: float, values: dict[str, float]) -> None:
        self.rows.append((when, dict(values)))

    def values(self, name: str) -> list[float]:
        return [v[name] for _, v in self.rows if name in v]


@contextlib.asynccontextmanager
async def mqtt(broker: Mosquitto, name: str, **kwargs: Any) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=name, protocol=aiomqtt.ProtocolVersion.V311, **kwargs
    ) as client:
        yield client


def tls_context(broker: Mosquitto) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(broker.ca_file))


class HandNode:
    """An edge node whose messages the test writes one by one."""

    def __init__(self, client: aiomqtt.Client, node: str, device: str = "filler") -> None:
        self.client, self.node, self.device = client, node, device
        self.seq = 0

    def topic(self, kind: sp.MessageType, device: str | None = None) -> str:
        return str(sp.Topic(GROUP, kind, self.node, device))

    async def raw(self, kind: sp.MessageType, payload: bytes, device: str | None = None) -> None:
        # QoS 0, as Sparkplug has edge nodes publish everything but their death certificate.
        await self.client.publish(self.topic(kind, device), payload, qos=0)

    async def death(self, bdseq: int = 0) -> None:
        payload = sp.encode([sp.OutMetric(sp.BDSEQ, sp.DataType.UINT64, bdseq)], seq=None)
        await self.raw(sp.MessageType.NDEATH, payload)

    async def flush(self) -> None:
        """Return once the broker has every QoS 0 message sent before: a QoS 1 message's
        acknowledgement comes after them (a client that disconnects at once may drop the
        QoS 0 messages it has not written yet)."""
        await self.client.publish(f"test/flush/{self.node}", b"", qos=1)

    async def births(
        self, speed: float, temp: float, run: bool, *, stamp: int, bdseq: int = 0
    ) -> None:
        self.seq = 0
        node = [sp.OutMetric(sp.BDSEQ, sp.DataType.UINT64, bdseq)]
        await self.raw(sp.MessageType.NBIRTH, sp.encode(node, seq=0, timestamp_ms=stamp))
        self.seq = 1
        metrics = [
            sp.OutMetric("Motor/Speed", sp.DataType.FLOAT, speed, alias=1),
            sp.OutMetric("Motor/Temp", sp.DataType.DOUBLE, temp, alias=2),
            sp.OutMetric("Motor/Run", sp.DataType.BOOLEAN, run, alias=3),
            sp.OutMetric("Other/Thing", sp.DataType.INT32, 7, alias=4),
        ]
        payload = sp.encode(metrics, seq=1, timestamp_ms=stamp)
        await self.raw(sp.MessageType.DBIRTH, payload, self.device)

    async def ddata(self, stamp: int, seq: int | None = None, **by_alias: float) -> None:
        """DDATA naming metrics by alias only: a1=…, a2=…"""
        self.seq = (self.seq + 1) % 256 if seq is None else seq
        metrics = [
            sp.OutMetric(None, sp.DataType.DOUBLE, value, alias=int(key[1:]), timestamp_ms=stamp)
            for key, value in by_alias.items()
        ]
        payload = sp.encode(metrics, seq=self.seq, timestamp_ms=stamp)
        await self.raw(sp.MessageType.DDATA, payload, self.device)
