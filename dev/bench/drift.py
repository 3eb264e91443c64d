"""Drift benchmarks: alarm-to-workflow latency, and a drift storm that must stay 50 workflows."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from temporalio.client import Client

from dev.bench.report import p99_line
from dev.simulator.modbus import SimulatedModbusPlc
from dev.simulator.signals import FaultKind
from factorylm.models.drift import DriftAlert
from factorylm.plant import Plant, Protocol, load_plant
from factorylm.settings import Settings
from factorylm.temporal_client import connect
from factorylm.waiting import wait_for
from ingest.alarms import AlarmConfig
from ingest.alerts import WorkflowStarter
from ingest.drift import DriftConfig
from ingest.service import IngestService
from temporal.devserver import DevServer
from workflows.drift_response import DriftResponseWorkflow


@asynccontextmanager
async def temporal_client(settings: Settings) -> AsyncIterator[Client]:
    server = DevServer(settings)
    started = await asyncio.to_thread(server.start)
    try:
        yield await connect(settings)
    finally:
        if started:
            await asyncio.to_thread(server.stop)


async def _terminate_open(client: Client, queue: str) -> int:
    n = 0
    async for wf in client.list_workflows(f"TaskQueue = '{queue}' AND ExecutionStatus = 'Running'"):
        await client.get_workflow_handle(wf.id).terminate("benchmark done")
        n += 1
    return n


def _at_least(items: list[Any], n: int) -> Callable[[], bool]:
    return lambda: len(items) >= n


def _alert(plc: str, metric: str, sigma: float) -> DriftAlert:
    now = datetime.now(UTC)
    return DriftAlert(
        plc_id=plc,
        vendor="bench",
        metric=metric,
        sigma=sigma,
        window_mean=sigma,
        window_count=10,
        window_seconds=1,
        baseline_mean=0,
        baseline_std=1,
        sample_time=now,
        detected_at=now,
    )


async def drift_storm_workflows(settings: Settings) -> dict[str, Any]:
    """10 000 alarms over 50 PLC·metric pairs within 10 s must become exactly 50 workflows."""
    tag = uuid.uuid4().hex[:6]
    queue = f"bench-storm-{tag}"  # no worker polls it: workflows stay open to be counted
    pairs = [(f"storm{tag}-{p}", m) for p in range(10) for m in ("a", "b", "c", "d", "e")]
    async with temporal_client(settings) as client:
        starter = WorkflowStarter(client, queue)
        t0 = time.perf_counter()
        for second in range(10):
            batch = [_alert(*pairs[i % len(pairs)], 3.0) for i in range(1000)]
            await asyncio.gather(*(starter.start(a) for a in batch[: len(batch) // 2]))
            for a in batch[len(batch) // 2 :]:
                starter(a)
            await asyncio.sleep(max(0.0, (second + 1) - (time.perf_counter() - t0)))
        await starter.drain()
        elapsed = time.perf_counter() - t0
        query = f"TaskQueue = '{queue}'"
        created = 0
        for _ in range(100):  # visibility is eventually consistent
            created = (await client.count_workflows(query)).count
            if created >= len(pairs):
                break
            await asyncio.sleep(0.1)
        await _terminate_open(client, queue)
    return {
        "bench": "drift_storm_workflows",
        "value": created,
        "unit": "workflows",
        "anchor": len(pairs),
        "ratio": round(created / len(pairs), 3),
        "triggers": starter.triggers,
        "start_calls_saved": starter.calls_saved,
        "rpc_calls": starter.calls,
        "seconds": round(elapsed, 2),
    }


def production_drift_config() -> DriftConfig:
    """The detector a plant gets by default: the Settings model's drift defaults (not this
    shell's environment); the plant file's metrics bring their shipped detectors."""
    f = Settings.model_fields
    return DriftConfig(
        window_s=f["drift_window_s"].default,
        threshold_sigma=f["drift_threshold_sigma"].default,
        clear_sigma=f["drift_clear_sigma"].default,
        on_delay_s=f["drift_on_delay_s"].default,
        forecast_horizon_s=f["drift_forecast_horizon_s"].default,
    )


async def drift_to_workflow_p99_ms(settings: Settings, faults: int = 100) -> list[dict[str, Any]]:
    """From the stored time of the sample that raised the alarm to the workflow's start, at the
    production drift settings; then with the demo's half-second window as a line of its own."""
    lines = []
    for name, drift in (
        ("drift_to_workflow_p99_ms", production_drift_config()),
        ("drift_to_workflow_p99_ms_demo_window", DriftConfig(window_s=0.5, min_samples=1)),
    ):
        latencies, anchor_rpcs, detectors = await _drift_latencies(settings, faults, drift)
        lines.append(
            p99_line(
                name,
                latencies[:faults],
                anchor_rpcs,
                "p99 of a bare start_workflow round trip",
                faults=len(latencies[:faults]),
                p95_ms=round(float(np.percentile(latencies[:faults], 95)), 1),
                max_ms=round(max(latencies[:faults]), 1),
                window_s=drift.window_s,
                first_alarm_by=detectors,
                flood_grouping="off",
            )
        )
    return lines


async def _drift_latencies(
    settings: Settings, faults: int, drift: DriftConfig
) -> tuple[list[float], list[float], dict[str, int]]:
    from dev.fakes.server import free_port

    template = next(
        p for p in load_plant(settings.plant_file).plcs if p.protocol is Protocol.MODBUS_TCP
    )
    plc = template.model_copy(update={"id": f"bench-{uuid.uuid4().hex[:6]}", "port": free_port()})
    plant = Plant.model_validate({"name": "bench", "plcs": [plc]})
    queue = f"bench-drift-{plc.id}"
    s = settings.model_copy(update={"task_queue": queue})
    metrics = [m.name for m in plc.metrics]
    latencies: list[float] = []
    detectors: dict[str, int] = {}
    sim = SimulatedModbusPlc(plc, seed=11)
    await sim.start()
    try:
        async with temporal_client(s) as client:
            anchor_rpcs = []
            for i in range(50):
                t0 = time.perf_counter()
                h = await client.start_workflow(
                    DriftResponseWorkflow.run,
                    _alert(plc.id, f"anchor{i}", 3.0),
                    id=f"anchor-{plc.id}-{i}",
                    task_queue=queue,
                )
                anchor_rpcs.append((time.perf_counter() - t0) * 1000)
                await h.terminate("anchor")
            # 100 faults in minutes are a flood by the alarm journal's rule (ingest/alarms.py),
            # which would hold alarms back from their workflows: this measures one alarm's way.
            alarms = replace(AlarmConfig.from_settings(s, plant), flood_alarms=0)
            ingest = IngestService(s, plant, client, drift=drift, alarms=alarms)
            await ingest.start()
            try:
                seen = 0
                while len(latencies) < faults:
                    injected = time.monotonic()
                    for m in metrics:
                        sim.inject(m, FaultKind.STEP, 8.0)
                    want = seen + len(metrics)
                    await wait_for(
                        "the fault's workflows",
                        _at_least(ingest.starter.started, want),
                        interval_s=0.005,
                    )
                    for started in ingest.starter.started[seen:want]:
                        handle = client.get_workflow_handle(started.workflow_id)
                        desc = await handle.describe()
                        lag = desc.start_time - started.alert.sample_time
                        latencies.append(lag.total_seconds() * 1000)
                        by = started.alert.detection.detector if started.alert.detection else "?"
                        detectors[by] = detectors.get(by, 0) + 1
                        await handle.terminate("benchmark")
                    seen = want
                    sim.clear()
                    faulty_s = time.monotonic() - injected
                    await wait_for(
                        "the alarms to clear",
                        lambda: not any(ingest.detector.alarmed(plc.id, m) for m in metrics),
                    )
                    await asyncio.sleep(ingest.starter.coalesce_s)  # next fault is a new episode
                    # A long window still holds this fault's samples: back to back, its mean
                    # would climb to an alarm of its own. Faulty a quarter of the time at most.
                    if drift.window_s > 10 * faulty_s:
                        await asyncio.sleep(3 * faulty_s)
            finally:
                await ingest.stop()
            await _terminate_open(client, queue)
    finally:
        await sim.stop()
    return latencies, anchor_rpcs, detectors
