"""`make bench` / `factorylm bench NAME`: one JSON line per benchmark, with its anchor.

Each benchmark measures the product's figure and, in the same run, an anchor for the same work
done the plainest possible way, and prints {"bench", "value", "unit", "anchor", "ratio"}.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from app.pgcluster import Cluster
from factorylm.db.pool import prepare_database
from factorylm.settings import Settings
from ingest.writer import _COLUMNS, BatchWriter, Sample

# A benchmark returns its line, or several (one per configuration, e.g. `detection`).
Bench = Callable[[Settings], Awaitable[dict[str, Any] | list[dict[str, Any]]]]


def _rows(tag: str, n: int) -> list[Sample]:
    t0 = datetime.now(UTC) - timedelta(hours=1)
    metrics = ("motor_speed", "motor_temp", "vibration", "current")
    return [
        (t0 + timedelta(microseconds=i * 100), f"{tag}-{i % 50}", metrics[i % 4], i * 0.001)
        for i in range(n)
    ]


async def ingest_writer(settings: Settings, n: int = 200_000, rounds: int = 3) -> dict[str, Any]:
    """The batch writer's rows/s against one raw COPY of the same rows into the same table.
    Rounds alternate the two so that both see the same machine; medians are reported."""
    conn = await asyncpg.connect(settings.pg_dsn)
    values: list[float] = []
    anchors: list[float] = []
    try:
        for r in range(rounds):
            raw_rows = _rows(f"bench-raw{r}", n)
            t0 = time.perf_counter()
            await conn.copy_records_to_table("samples", records=raw_rows, columns=_COLUMNS)
            anchors.append(n / (time.perf_counter() - t0))

            writer_rows = _rows(f"bench-writer{r}", n)
            writer = BatchWriter(
                settings.pg_dsn, max_rows=settings.batch_max_rows, buffer_rows=2 * n
            )
            writer.start()
            t0 = time.perf_counter()
            for i in range(0, n, 1000):  # arrives in poll-sized chunks, as from collectors
                writer.add(writer_rows[i : i + 1000])
                await asyncio.sleep(0)
            await writer.stop()
            values.append(writer.written / (time.perf_counter() - t0))
            assert writer.written == n and writer.dropped == 0
            await conn.execute("DELETE FROM samples WHERE plc_id LIKE 'bench-%'")
    finally:
        await conn.close()
    value, anchor = statistics.median(values), statistics.median(anchors)
    return {
        "bench": "ingest_writer",
        "value": round(value),
        "unit": "rows/s",
        "anchor": round(anchor),
        "ratio": round(value / anchor, 3),
        "rows": n,
        "rounds": rounds,
    }


def _registry() -> dict[str, Bench]:
    from dev.bench.alarms import alarm_journal
    from dev.bench.approval import approval_to_write_p99_ms, fault_to_whatsapp_s
    from dev.bench.board import board_p99_ms
    from dev.bench.delivery import delivery_failover
    from dev.bench.detection import detection
    from dev.bench.drift import drift_storm_workflows, drift_to_workflow_p99_ms
    from dev.bench.ingest import ingest_end_to_end, poll_cycle
    from dev.bench.lifecycle import lifecycle
    from dev.bench.memory import embed_throughput, similarity_top5_p99_ms
    from dev.bench.multi_site import multi_site
    from dev.bench.opcua import opcua_ingest
    from dev.bench.outage import alarm_outage
    from dev.bench.photo import photo_to_workorder_p99_ms
    from dev.bench.sparkplug import sparkplug_ingest
    from dev.bench.spool import store_and_forward
    from dev.bench.telegraf import ingest_vs_telegraf

    return {
        "ingest_writer": ingest_writer,
        "drift_to_workflow_p99_ms": drift_to_workflow_p99_ms,
        "drift_storm_workflows": drift_storm_workflows,
        "detection": detection,
        "alarm_outage": alarm_outage,
        "alarm_journal": alarm_journal,
        "poll_cycle": poll_cycle,
        "ingest_end_to_end": ingest_end_to_end,
        "approval_to_write_p99_ms": approval_to_write_p99_ms,
        "fault_to_whatsapp_s": fault_to_whatsapp_s,
        "delivery_failover": delivery_failover,
        "photo_to_workorder_p99_ms": photo_to_workorder_p99_ms,
        "similarity_top5_p99_ms": similarity_top5_p99_ms,
        "embed_throughput": embed_throughput,
        "lifecycle": lifecycle,
        "store_and_forward": store_and_forward,
        "multi_site": multi_site,
        "ingest_vs_telegraf": ingest_vs_telegraf,
        "board_p99_ms": board_p99_ms,
        "opcua_ingest": opcua_ingest,
        "sparkplug_ingest": sparkplug_ingest,
    }


BENCHMARKS: dict[str, Bench] = _registry()


async def run(settings: Settings, names: list[str]) -> None:
    Cluster.from_settings(settings).start()
    await prepare_database(settings)
    for name in names:
        result = await BENCHMARKS[name](settings)
        for line in result if isinstance(result, list) else [result]:
            print(json.dumps(line), flush=True)


def main(settings: Settings, name: str) -> int:
    if name != "all":
        asyncio.run(run(settings, [name]))
        return 0
    # Each benchmark in a process of its own, as each would run in production: one stack's
    # threads, pools and servers never linger into the next benchmark's figures.
    failed = []
    for bench_name in BENCHMARKS:
        done = subprocess.run([sys.executable, "-m", "app.cli", "bench", bench_name])
        if done.returncode != 0:
            failed.append(bench_name)
            print(f"benchmark {bench_name} failed (exit {done.returncode})", file=sys.stderr)
    return 1 if failed else 0
