"""`factorylm bench opcua_ingest`: monitored items of one asyncua server, stored in PostgreSQL.

The server runs in a process of its own (as a PLC's server is another machine): asyncua's
`Server` from the simulator, its variables changed every interval by that process, so each
monitored item has a notification every interval. In the same run, two clients in turn
subscribe to every item at that interval for the same time:

- the anchor, a bare asyncua subscription client with a handler that counts each value;
- the product: the OPC UA collector under the collector manager, handing each value to the
  batch writer (binary COPY into the samples hypertable) and the drift detector, as the
  ingest process does.

value = samples stored per second; anchor = values the bare client received per second;
missed = notifications the server produced (items × its ticks) that a client never got; late =
values received more than two publishing intervals after their source timestamp.

The nominal load is 5 000 items at 100 ms (50 000 values/s). The server process reports how
many ticks it managed; when it cannot keep that rate on this machine the ladder steps down the
item count and measures at the first load the server sustains, saying so.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from dev.fakes.server import free_port
from factorylm.plant import Plant, Plc
from factorylm.settings import Settings

TAG = "bench-opcua"
_LADDER = (5000, 2000, 1000, 500, 200)
_STEP_FIGURES = (
    "items",
    "server_ticks_share",
    "anchor_per_s",
    "stored_per_s",
    "subscribe_s",
    "missed",
    "late",
)
_SUSTAINED = 0.95  # of the nominal ticks: the server keeps up


def _plant(items: int, interval_ms: int, port: int) -> Plant:
    return Plant.model_validate(
        {
            "name": TAG,
            "plcs": [
                {
                    "id": f"{TAG}-{items}",
                    "vendor": "generic_opcua",
                    "protocol": "opcua",
                    "port": port,
                    "poll_interval_ms": interval_ms,
                    "timeout_ms": 10000,
                    "metrics": [
                        {
                            "name": f"v{i}",
                            "node_id": f"ns=2;i={100000 + i}",
                            "type": "double",
                            "baseline": {"mean": 0.0, "std": 1000.0},
                        }
                        for i in range(items)
                    ],
                }
            ],
        }
    )


# -- the server process -------------------------------------------------------------------------
async def serve(plant_file: Path) -> None:
    """Serve the plant file's one OPC UA PLC; change every value every interval; print
    `ticks <n> <monotonic>` after each tick (the bench counts the server's rate from them)."""
    from dev.simulator.opcua import SimulatedOpcUaPlc
    from factorylm.plant import load_plant

    plc = load_plant(plant_file).plcs[0]
    period = plc.poll_interval_ms / 1000
    with tempfile.TemporaryDirectory() as certs:
        # The simulator's own signal tick is off (1e6 s): this loop changes the values.
        peer = SimulatedOpcUaPlc(plc, tick_s=1e6, cert_dir=Path(certs))
        await peer.start()
        print("serving", flush=True)
        ticks = 0
        next_at = time.monotonic()
        while True:
            await peer.store([(m, ticks + i * 1e-4) for i, m in enumerate(plc.metrics)])
            ticks += 1
            print(f"ticks {ticks} {time.monotonic():.4f}", flush=True)
            next_at += period
            delay = next_at - time.monotonic()
            if delay < 0:  # behind: keep the cadence, the next tick is the next slot
                next_at += (int(-delay // period) + 1) * period
                delay = next_at - time.monotonic()
            await asyncio.sleep(delay)


class _Server:
    def __init__(self, plant_file: Path) -> None:
        self.plant_file = plant_file
        self.proc: asyncio.subprocess.Process | None = None
        self.ticks: list[float] = []  # monotonic time of each tick

    async def __aenter__(self) -> _Server:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dev.bench.opcua",
            str(self.plant_file),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 300)
        if b"serving" not in line:
            raise RuntimeError(f"the OPC UA server did not start: {line!r}")
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            parts = line.split()
            if parts and parts[0] == b"ticks":
                self.ticks.append(float(parts[2]))

    def ticks_between(self, t0: float, t1: float) -> int:
        return sum(1 for t in self.ticks if t0 <= t < t1)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 60)
        self._reader.cancel()


# -- the two clients ----------------------------------------------------------------------------
class _Counter:
    """The anchor's handler: count each value and how late it came."""

    def __init__(self) -> None:
        self.received = 0
        self.status_changes = 0  # the subscription ended (it should not)
        self.latency: list[float] = []

    def status_change_notification(self, status: Any) -> None:
        self.status_changes += 1

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.received += 1
        stamp = data.monitored_item.Value.SourceTimestamp
        if stamp is not None and self.received % 50 == 0:  # a sample of them is enough
            self.latency.append((datetime.now(UTC) - stamp).total_seconds())


async def _anchor(plc: Plc, url: str, warmup_s: float, duration_s: float) -> dict[str, Any]:
    from asyncua import ua
    from asyncua.client.client import Client

    from factorylm.drivers.opcua import WATCHDOG_S

    client = Client(url, timeout=30, watchdog_intervall=WATCHDOG_S)  # the product's watchdog
    client.session_timeout = 600_000
    await client.connect()
    try:
        counter = _Counter()
        sub = await client.create_subscription(plc.poll_interval_ms, counter)
        nodes = [client.get_node(ua.NodeId.from_string(m.node_id or "")) for m in plc.metrics]
        for i in range(0, len(nodes), 1000):
            await sub.subscribe_data_change(
                nodes[i : i + 1000], sampling_interval=ua.Double(plc.poll_interval_ms)
            )
        await asyncio.sleep(warmup_s)
        received0, t0 = counter.received, time.monotonic()
        await asyncio.sleep(duration_s)
        received, t1 = counter.received - received0, time.monotonic()
        await sub.delete()
    finally:
        await client.disconnect()
    return {"received": received, "t0": t0, "t1": t1, "latency": counter.latency}


async def _product(
    settings: Settings, plant: Plant, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    from ingest.drift import DriftConfig, DriftDetector
    from ingest.manager import CollectorManager
    from ingest.subscription import OpcUaCollector
    from ingest.writer import BatchWriter

    writer = BatchWriter(settings.pg_dsn, max_rows=settings.batch_max_rows)
    detector = DriftDetector(DriftConfig(), lambda alert: None)
    detector.configure_plant(plant)

    def sink(p: Plc, when: datetime, mono: float, values: dict[str, float]) -> None:
        writer.add((when, p.id, name, value) for name, value in values.items())
        for name, value in values.items():
            detector.observe(p.id, name, mono, value, when)

    manager = CollectorManager(plant, sink, dsn=settings.pg_dsn, health_interval_s=60)
    collector = manager.collectors[0]
    assert isinstance(collector, OpcUaCollector)
    writer.start()
    await manager.start()
    try:
        # Connecting, resolving every node's data type and creating the items takes a while
        # with thousands of them; the warm-up starts once they are subscribed.
        deadline = time.monotonic() + 300
        while not collector.subscribed:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the collector did not subscribe: {collector.last_error}")
            await asyncio.sleep(0.2)
        subscribed_s = time.monotonic() - (deadline - 300)
        await asyncio.sleep(warmup_s)
        written0, got0, missed0 = writer.written, collector.notifications, collector.missed
        collector.lateness.clear()
        t0, wall0 = time.monotonic(), datetime.now(UTC)
        await asyncio.sleep(duration_s)
        t1, wall1 = time.monotonic(), datetime.now(UTC)
        got = collector.notifications - got0
        await manager.stop()  # no more samples; the writer's buffer still flushes
        await writer.stop()
        written = writer.written - written0
        # Stored: the rows whose source timestamps fall in the window, whenever written.
        conn = await asyncpg.connect(settings.pg_dsn)
        try:
            stored = await conn.fetchval(
                "SELECT count(*) FROM samples WHERE plc_id = $1 AND time >= $2 AND time < $3",
                plant.plcs[0].id,
                wall0,
                wall1,
            )
        finally:
            await conn.close()
        lateness = list(collector.lateness)
        seq_gaps = collector.missed - missed0
        errors = collector.failures
    finally:
        await manager.stop()
        await writer.stop()
        await manager.close()
    return {
        "received": got,
        "written": written,
        "stored": stored,
        "t0": t0,
        "t1": t1,
        "latency": lateness,
        "sequence_gaps": seq_gaps,
        "errors": errors,
        "dropped": writer.dropped,
        "subscribed_s": subscribed_s,
    }


def _pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] * 1000 if values else 0.0
    return statistics.quantiles(values, n=100)[q - 1] * 1000


async def _step(
    settings: Settings, items: int, interval_ms: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    from ingest.subscription import OpcUaCollector  # noqa: F401 (fails early if not installed)

    port = free_port()
    plant = _plant(items, interval_ms, port)
    plc = plant.plcs[0]
    url = f"opc.tcp://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plant.yaml"
        path.write_text(yaml.safe_dump(plant.model_dump(mode="json", by_alias=True)))
        try:
            async with _Server(path) as server:
                a = await _anchor(plc, url, warmup_s, duration_s)
                p = await _product(settings, plant, warmup_s, duration_s)
                # A tick's values arrive about one median latency after it: count the ticks
                # whose values were due inside each client's window.
                a_lag = statistics.median(a["latency"]) if a["latency"] else 0.0
                p_lag = statistics.median(p["latency"]) if p["latency"] else 0.0
                a_ticks = server.ticks_between(a["t0"] - a_lag, a["t1"] - a_lag)
                p_ticks = server.ticks_between(p["t0"] - p_lag, p["t1"] - p_lag)
        finally:
            conn = await asyncpg.connect(settings.pg_dsn)
            try:
                await conn.execute("DELETE FROM samples WHERE plc_id = $1", plc.id)
                await conn.execute("DELETE FROM collector_status WHERE plc_id = $1", plc.id)
            finally:
                await conn.close()
    nominal_ticks = duration_s * 1000 / interval_ms
    late_after = 2 * interval_ms / 1000
    return {
        "items": items,
        "interval_ms": interval_ms,
        "offered_per_s": round(items * 1000 / interval_ms),
        "server_ticks_share": round(min(a_ticks, p_ticks) / nominal_ticks, 3),
        "server_ticks_share_anchor": round(a_ticks / nominal_ticks, 3),
        "server_ticks_share_product": round(p_ticks / nominal_ticks, 3),
        "server_sustained": min(a_ticks, p_ticks) >= _SUSTAINED * nominal_ticks,
        "anchor_per_s": round(a["received"] / (a["t1"] - a["t0"])),
        "stored_per_s": round(p["stored"] / (p["t1"] - p["t0"])),
        "product_received_per_s": round(p["received"] / (p["t1"] - p["t0"])),
        "anchor_missed": max(items * a_ticks - a["received"], 0),
        "missed": max(items * p_ticks - p["received"], 0),
        "sequence_gaps": p["sequence_gaps"],
        "late": sum(1 for x in p["latency"] if x > late_after),
        "deliveries": len(p["latency"]),
        "latency_p50_ms": round(_pct(p["latency"], 50), 1),
        "latency_p95_ms": round(_pct(p["latency"], 95), 1),
        "latency_p99_ms": round(_pct(p["latency"], 99), 1),
        "anchor_latency_p99_ms": round(_pct(a["latency"], 99), 1),
        "errors": p["errors"],
        "dropped": p["dropped"],
        "subscribe_s": round(p["subscribed_s"], 1),  # connect, resolve and create the items
    }


def _client_cost(plant: Plant, rounds: int = 20) -> dict[str, float]:
    """The product's CPU per value, without a server: publish responses of every item (binary,
    as they come off the socket) decoded by asyncua and handled by the collector, its sink
    handing the values to the writer's buffer and the drift detector (the COPY itself is the
    ingest_writer benchmark's). Beside it, asyncua's decoding alone: what any client pays."""
    from asyncua import ua
    from asyncua.common.utils import Buffer
    from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

    from ingest.drift import DriftConfig, DriftDetector
    from ingest.subscription import OpcUaCollector
    from ingest.writer import BatchWriter

    plc = plant.plcs[0]
    writer = BatchWriter("postgresql://unused", buffer_rows=10_000_000)
    detector = DriftDetector(DriftConfig(), lambda alert: None)
    detector.configure_plant(plant)

    def sink(p: Plc, when: datetime, mono: float, values: dict[str, float]) -> None:
        writer.add((when, p.id, name, value) for name, value in values.items())
        for name, value in values.items():
            detector.observe(p.id, name, mono, value, when)

    collector = OpcUaCollector(plc, sink, driver=object())  # type: ignore[arg-type]
    # The handles the subscription would have registered (bench only: no server here).
    collector._handles = {i: (m.name, ua.VariantType.Double) for i, m in enumerate(plc.metrics)}
    decode, full = [], []
    for r in range(rounds):
        now = datetime.now(UTC)
        items = [
            ua.MonitoredItemNotification(
                ClientHandle=i,
                Value=ua.DataValue(
                    ua.Variant(float(r + i * 1e-4), ua.VariantType.Double),
                    SourceTimestamp=now,  # type: ignore[arg-type]
                    ServerTimestamp=now,  # type: ignore[arg-type]
                ),
            )
            for i in range(len(plc.metrics))
        ]
        message = ua.NotificationMessage(
            SequenceNumber=r + 1,
            PublishTime=now,
            NotificationData=[ua.DataChangeNotification(MonitoredItems=items)],
        )
        wire = struct_to_binary(
            ua.PublishResponse(Parameters=ua.PublishResult(NotificationMessage=message))
        )
        t0 = time.perf_counter()
        decoded = struct_from_binary(ua.PublishResponse, Buffer(wire))
        t1 = time.perf_counter()
        collector._published(decoded.Parameters)
        t2 = time.perf_counter()
        decode.append((t1 - t0) / len(items))
        full.append((t2 - t0) / len(items))
        writer._buffer.clear()
    return {
        "decode_us": statistics.median(decode) * 1e6,
        "full_us": statistics.median(full) * 1e6,
        "full_p95_us": _pct(full, 95) * 1000,
    }


async def opcua_ingest(
    settings: Settings, interval_ms: int = 100, warmup_s: float = 5.0, duration_s: float = 20.0
) -> dict[str, Any]:
    """Samples/s stored from one server's monitored items at 100 ms, against a bare asyncua
    subscription client on the same server in the same run."""
    steps = []
    for items in _LADDER:
        step = await _step(settings, items, interval_ms, warmup_s, duration_s)
        steps.append(step)
        print(
            f"opcua_ingest: {items} items at {interval_ms} ms: server ticks "
            f"{step['server_ticks_share']:.0%} of nominal, anchor {step['anchor_per_s']}/s, "
            f"stored {step['stored_per_s']}/s",
            file=sys.stderr,
        )
        if step["server_sustained"]:
            break
    best = steps[-1]
    ratio = best["stored_per_s"] / best["anchor_per_s"] if best["anchor_per_s"] else None
    cost = _client_cost(_plant(_LADDER[0], interval_ms, 1))
    return {
        "bench": "opcua_ingest",
        "value": best["stored_per_s"],
        "unit": "samples/s stored",
        "anchor": best["anchor_per_s"],
        "ratio": round(ratio, 3) if ratio is not None else None,
        **{k: v for k, v in best.items() if k not in ("stored_per_s", "anchor_per_s")},
        "nominal": f"{_LADDER[0]} items at {interval_ms} ms",
        # Without a server: the product's CPU per value at the nominal item count, asyncua's
        # decoding alone, and the values/s one core of this machine would take at that cost.
        "client_us_per_value": round(cost["full_us"], 2),
        "client_us_per_value_p95": round(cost["full_p95_us"], 2),
        "decode_us_per_value": round(cost["decode_us"], 2),
        "client_capacity_per_s": round(1e6 / cost["full_us"]),
        "measured_at": f"{best['items']} items at {interval_ms} ms"
        + ("" if best["server_sustained"] else " (the server did not keep even this rate)"),
        "steps": [{k: s[k] for k in _STEP_FIGURES} for s in steps],
        "seconds": duration_s,
        "goal": "ratio >= 0.8",
        "cores": os.cpu_count(),
    }


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
