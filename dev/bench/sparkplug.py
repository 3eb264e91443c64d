"""`factorylm bench sparkplug_ingest`: Sparkplug B edge nodes publishing through a real
Mosquitto at increasing rates, stored in PostgreSQL.

Ten edge nodes (one device each, ten metrics per DDATA named by alias, QoS 0 as the
specification has edge nodes publish data) run in a process of their own, as edge nodes are
other machines. At each rate of the ladder, in the same run and on the same broker, two
subscribers take the same load in turn for the same time:

- the anchor, a bare aiomqtt subscriber at QoS 1 that counts the DDATA messages it receives;
- the product: the ten Sparkplug collectors under the collector manager (persistent sessions,
  QoS 1, decoding, alias lookup, sequence checks), handing every value to the batch writer
  (binary COPY into the samples hypertable) and the drift detector, as the ingest does.

value = the highest rate (metrics/s, as published) at which every metric was stored, none
lost, no sequence gap, and the ingest kept up (everything handed to the writer within 1 s of the
last message sent); anchor = the highest rate at which the bare subscriber received every
metric, kept up the same way; ratio = value / anchor; lag = from the edge node's timestamp to the hand-off to the
writer, p50/p95/p99 over every delivery of that step. A rate the edge nodes' process itself
cannot reach (within 10 %) ends the ladder and is said so (`publisher_limited`): the figures are
then lower bounds.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

import asyncpg

from dev.fakes.server import free_port
from factorylm.plant import Plant, Plc
from factorylm.settings import Settings

TAG = "bench-spb"
GROUP = "bench"
NODES = 10
METRICS = 10
LADDER = (
    2_000,
    5_000,
    10_000,
    20_000,
    30_000,
    40_000,
    60_000,
    80_000,
    120_000,
    160_000,
)  # metrics/s
REACHED = 0.9  # of the offered rate: the publisher kept up
KEPT_UP_S = 1.0  # a subscriber had every message at most this long after the last was sent


def _plant(port: int, step: int) -> Plant:
    return Plant.model_validate(
        {
            "name": TAG,
            "plcs": [
                {
                    # A fresh id (and so a fresh persistent session) per step: the last
                    # step's sessions would be handed the births published meanwhile.
                    "id": f"{TAG}-{step}-{n}",
                    "vendor": "sparkplug_edge",
                    "protocol": "sparkplug_b",
                    "port": port,
                    "group": GROUP,
                    "edge_node": f"node{n}",
                    "device": "dev",
                    "poll_interval_ms": 1000,
                    "metrics": [
                        {
                            "name": f"m{i}",
                            "metric": f"Line/M{i}",
                            "type": "real",
                            "baseline": {"mean": 0.0, "std": 1e6},
                        }
                        for i in range(METRICS)
                    ],
                }
                for n in range(NODES)
            ],
        }
    )


# -- the edge nodes' process --------------------------------------------------------------------
def publish(port: int, rate: int, duration_s: float) -> None:
    """Births, then DDATA at `rate` metrics/s for `duration_s`; prints `sent <messages>
    <metrics> <seconds>` last. paho's own client, publishing from its network thread's queue,
    so the edge nodes are not what limits the ladder."""
    from paho.mqtt.client import Client
    from paho.mqtt.enums import CallbackAPIVersion

    from factorylm import sparkplug as sp

    clients = []
    for n in range(NODES):
        client = Client(CallbackAPIVersion.VERSION2, client_id=f"{TAG}-node{n}")
        client.max_queued_messages_set(0)
        client.connect("127.0.0.1", port)
        client.loop_start()
        clients.append(client)
    seqs = [0] * NODES
    for n, client in enumerate(clients):
        birth = [sp.OutMetric(sp.BDSEQ, sp.DataType.UINT64, 0)]
        client.publish(f"spBv1.0/{GROUP}/NBIRTH/node{n}", sp.encode(birth, seq=0), qos=1)
        seqs[n] = 1
        metrics = [
            sp.OutMetric(f"Line/M{i}", sp.DataType.DOUBLE, 0.0, alias=i + 1) for i in range(METRICS)
        ]
        info = client.publish(
            f"spBv1.0/{GROUP}/DBIRTH/node{n}/dev", sp.encode(metrics, seq=1), qos=1
        )
        info.wait_for_publish(10)
    time.sleep(0.5)
    msg_rate = rate / METRICS
    topics = [f"spBv1.0/{GROUP}/DDATA/node{n}/dev" for n in range(NODES)]
    sent = 0
    last = None
    t0 = time.monotonic()
    end = t0 + duration_s
    while (now := time.monotonic()) < end:
        due = int((now - t0) * msg_rate) - sent
        for _ in range(due):
            n = sent % NODES
            seqs[n] = (seqs[n] + 1) % 256
            stamp = sp.now_ms()
            metrics = [
                sp.OutMetric(
                    None, sp.DataType.DOUBLE, float(sent + i), alias=i + 1, timestamp_ms=stamp
                )
                for i in range(METRICS)
            ]
            last = clients[n].publish(topics[n], sp.encode(metrics, seq=seqs[n]), qos=0)
            sent += 1
        time.sleep(0.002)
    elapsed = time.monotonic() - t0
    ended = time.time()
    if last is not None:
        last.wait_for_publish(30)
    time.sleep(0.3)  # the other nodes' last messages leave their sockets
    for client in clients:
        client.disconnect()
        client.loop_stop()
    print(f"sent {sent} {sent * METRICS} {elapsed:.4f} {ended:.4f}", flush=True)


async def _publisher(port: int, rate: int, duration_s: float) -> tuple[int, float, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dev.bench.sparkplug",
        str(port),
        str(rate),
        str(duration_s),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    out = (await asyncio.wait_for(proc.stdout.read(), duration_s + 60)).decode()
    await proc.wait()
    last = [line for line in out.splitlines() if line.startswith("sent ")]
    if proc.returncode != 0 or not last:
        raise RuntimeError(f"the edge nodes' process failed: {out[-500:]}")
    _, _messages, metrics, seconds, ended = last[0].split()
    return int(metrics), float(seconds), float(ended)


async def _settled(count: Any, expected: int, patience_s: float = 5.0) -> tuple[int, float]:
    """The count once it reaches `expected` or stops moving for `patience_s`, and the wall
    clock when it got there (or last moved)."""
    last, moved_at = count(), time.time()
    while last < expected:
        await asyncio.sleep(0.01)
        now = count()
        if now != last:
            last, moved_at = now, time.time()
        elif time.time() - moved_at > patience_s:
            break
    return int(last), moved_at


async def _anchor(port: int, rate: int, duration_s: float) -> dict[str, Any]:
    import aiomqtt

    received = 0
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"{TAG}-anchor") as client:
        await client.subscribe(f"spBv1.0/{GROUP}/DDATA/#", qos=1)

        async def count() -> None:
            nonlocal received
            async for _message in client.messages:
                received += 1

        counting = asyncio.create_task(count())
        sent, seconds, ended = await _publisher(port, rate, duration_s)
        got, done_at = await _settled(lambda: received * METRICS, sent)
        counting.cancel()
        await asyncio.gather(counting, return_exceptions=True)
    return {"sent": sent, "received": got, "seconds": seconds, "drain_s": done_at - ended}


async def _product(settings: Settings, port: int, rate: int, duration_s: float) -> dict[str, Any]:
    from ingest.drift import DriftConfig, DriftDetector
    from ingest.manager import CollectorManager
    from ingest.mqtt_collector import SparkplugCollector
    from ingest.writer import BatchWriter

    plant = _plant(port, rate)
    writer = BatchWriter(settings.pg_dsn, max_rows=settings.batch_max_rows)
    detector = DriftDetector(DriftConfig(), lambda alert: None)
    detector.configure_plant(plant)

    lags: list[float] = []

    def sink(p: Plc, when: Any, mono: float, values: dict[str, float]) -> None:
        writer.add((when, p.id, name, value) for name, value in values.items())
        for name, value in values.items():
            detector.observe(p.id, name, mono, value, when)
        if len(lags) < 200_000:
            # Publish (the node's timestamp) to hand-off to the writer, every delivery.
            lags.append(time.time() - when.timestamp())

    manager = CollectorManager(plant, sink, dsn=settings.pg_dsn, health_interval_s=60)
    collectors = [c for c in manager.collectors if isinstance(c, SparkplugCollector)]
    writer.start()
    await manager.start()
    try:
        deadline = time.monotonic() + 30
        while not all(c.connects for c in collectors):
            if time.monotonic() > deadline:
                raise RuntimeError("the collectors did not subscribe")
            await asyncio.sleep(0.05)
        sent, seconds, ended = await _publisher(port, rate, duration_s)
        births = NODES * METRICS  # each DBIRTH's values are samples too
        # Handed to the writer (the ingest's own work); then PostgreSQL has them.
        handed, done_at = await _settled(lambda: writer.written + writer.pending, sent + births)
        await _settled(lambda: writer.written, handed)
        gaps = sum(c.gaps for c in collectors)
        bad = sum(sum(c.bad_samples.values()) for c in collectors)
    finally:
        await manager.stop()
        await writer.stop()
        await manager.close()
    return {
        "sent": sent,
        "stored": writer.written - births,
        "seconds": seconds,
        "gaps": gaps,
        "bad": bad,
        "dropped": writer.dropped,
        "lags": lags[NODES:],  # the births' values carry the births' time
        "drain_s": done_at - ended,
    }


async def _clean(settings: Settings) -> None:
    conn = await asyncpg.connect(settings.pg_dsn)
    try:
        await conn.execute("DELETE FROM samples WHERE plc_id LIKE $1", f"{TAG}-%")
        await conn.execute("DELETE FROM collector_status WHERE plc_id LIKE $1", f"{TAG}-%")
    finally:
        await conn.close()


async def sparkplug_ingest(settings: Settings, duration_s: float = 3.0) -> dict[str, Any]:
    """Highest metrics/s stored with none lost, against a bare subscriber on the same broker."""
    from dev.mosquitto import Mosquitto

    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    backlog: dict[str, Any] | None = None
    async with Mosquitto(port=free_port()) as broker:
        for rate in LADDER:
            a = await _anchor(broker.port, rate, duration_s)
            p = await _product(settings, broker.port, rate, duration_s)
            await _clean(settings)
            step: dict[str, Any] = {
                "offered_per_s": rate,
                "anchor_reached_per_s": round(a["sent"] / a["seconds"]),
                "reached_per_s": round(p["sent"] / p["seconds"]),
                "anchor_lost": a["sent"] - a["received"],
                # After the last message was published: until the subscriber had them all.
                "anchor_drain_s": round(max(a["drain_s"], 0.0), 3),
                "drain_s": round(max(p["drain_s"], 0.0), 3),
                "lost": p["sent"] - p["stored"],
                "sequence_gaps": p["gaps"],
                "bad": p["bad"],
                "dropped": p["dropped"],
            }
            lags = p["lags"]
            if len(lags) >= 100:
                q = statistics.quantiles(lags, n=100)
                step["lag_p50_ms"], step["lag_p95_ms"], step["lag_p99_ms"] = (
                    round(q[49] * 1000, 1),
                    round(q[94] * 1000, 1),
                    round(q[98] * 1000, 1),
                )
            steps.append(step)
            print(f"sparkplug_ingest: {step}", file=sys.stderr)
            # Kept up: everything arrived, and within KEPT_UP_S of the last message.
            kept = step["drain_s"] <= KEPT_UP_S
            clean = step["lost"] == 0 and step["sequence_gaps"] == 0 and step["bad"] == 0
            if clean and kept and (best is None or step["reached_per_s"] > best["reached_per_s"]):
                best = step
            if clean and (backlog is None or step["reached_per_s"] > backlog["reached_per_s"]):
                backlog = step
            limited = min(step["reached_per_s"], step["anchor_reached_per_s"]) < REACHED * rate
            behind = step["drain_s"] > KEPT_UP_S and step["anchor_drain_s"] > KEPT_UP_S
            if limited or behind or (step["anchor_lost"] > 0 and step["lost"] > 0):
                step["publisher_limited"] = limited
                break
    clean_anchor = [
        s["anchor_reached_per_s"]
        for s in steps
        if s["anchor_lost"] == 0 and s["anchor_drain_s"] <= KEPT_UP_S
    ]
    anchor = max(clean_anchor, default=0)
    value = best["reached_per_s"] if best else 0
    return {
        "bench": "sparkplug_ingest",
        "value": value,
        "unit": "metrics/s stored, none lost",
        "anchor": anchor,
        "ratio": round(value / anchor, 3) if anchor else None,
        "lag_p50_ms": best.get("lag_p50_ms") if best else None,
        "lag_p95_ms": best.get("lag_p95_ms") if best else None,
        "lag_p99_ms": best.get("lag_p99_ms") if best else None,
        # Everything stored in the end, though it fell behind the edge nodes for a while.
        "stored_with_backlog_per_s": backlog["reached_per_s"] if backlog else 0,
        "edge_nodes": NODES,
        "metrics_per_message": METRICS,
        "step_s": duration_s,
        # Where the edge nodes' own process could not publish faster: the ladder's top, with
        # nothing lost there, the figures are a lower bound of what the ingest takes.
        "publisher_limited": bool(steps and steps[-1].get("publisher_limited")),
        "steps": steps,
    }


if __name__ == "__main__":
    publish(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
