"""Baselines computed in SQL by BaselineWorkflow on the real stack, checked against numpy."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest
from temporalio.client import Client

from app.stack import Stack
from factorylm.models.baselines import BaselineReport, BaselineWorkflowInput
from factorylm.plant import Plant
from factorylm.settings import Settings
from helpers import plant_with_free_ports, until
from ingest.baselines import BaselineLoader, load_latest
from ingest.drift import DriftConfig, DriftDetector
from temporal.schedules import BASELINE_SCHEDULE_ID
from workflows.baseline import BaselineWorkflow


@pytest.fixture
async def stack(tmp_path: Path, settings: Settings, client: Client) -> AsyncIterator[Stack]:
    plant: Plant
    plant, _ = plant_with_free_ports(tmp_path)
    queue = f"baseline-{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(update={"task_queue": queue, "plc_task_queue": f"{queue}-edge"})
    stack = Stack(s, plant, client, run_ingest=False, run_api=False, run_edge_worker=False)
    await stack.start()
    yield stack
    await stack.stop()


async def insert_series(pool: asyncpg.Pool, plc: str, metric: str, values: np.ndarray) -> None:
    end = datetime.now(UTC) - timedelta(minutes=1)
    step = timedelta(hours=2) / len(values)  # spread over two hours of the window
    rows = [(end - i * step, plc, metric, float(v)) for i, v in enumerate(values)]
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "samples", records=rows, columns=("time", "plc_id", "metric", "value")
        )


async def run_baselines(stack: Stack, record: Any = None, **kw: object) -> BaselineReport:
    handle = await stack.client.start_workflow(
        BaselineWorkflow.run,
        BaselineWorkflowInput(**kw),
        id=f"baseline-test-{uuid.uuid4().hex[:6]}",
        task_queue=stack.settings.task_queue,
    )
    report = await handle.result()
    if record is not None:
        await record(handle, "baseline")
    return report


async def test_statistics_match_numpy_and_thin_metrics_are_reported(
    stack: Stack, pool: asyncpg.Pool, record_history: Any
) -> None:
    plc = f"bl-{uuid.uuid4().hex[:6]}"
    rng = np.random.default_rng(4)
    vibration = rng.normal(2.1, 0.3, 5000)
    temp = rng.gamma(4.0, 3.0, 3000) + 40  # skewed: p95/p99 are not mean + kσ
    await insert_series(pool, plc, "vibration", vibration)
    await insert_series(pool, plc, "motor_temp", temp)
    await insert_series(pool, plc, "current", rng.normal(12, 1, 20))  # too few
    await insert_series(pool, plc, "stuck", np.full(500, 7.0))  # no variation

    report = await run_baselines(stack, record_history, window_hours=48, min_samples=100)
    ours = {b.metric: b for b in report.baselines if b.plc_id == plc}
    assert set(ours) == {"vibration", "motor_temp"}
    for name, data in (("vibration", vibration), ("motor_temp", temp)):
        b = ours[name]
        assert b.sample_count == len(data)
        assert b.mean == pytest.approx(np.mean(data), rel=1e-9)
        assert b.std == pytest.approx(np.std(data, ddof=1), rel=1e-9)
        assert b.p95 == pytest.approx(np.percentile(data, 95), rel=1e-9)
        assert b.p99 == pytest.approx(np.percentile(data, 99), rel=1e-9)
    skipped = {s.metric: s.reason for s in report.skipped if s.plc_id == plc}
    assert "20 samples, fewer than 100" in skipped["current"]
    assert "no variation" in skipped["stuck"]
    stored = await pool.fetchval("SELECT count(*) FROM baselines WHERE plc_id = $1", plc)
    assert stored == 2
    sent = await pool.fetchval(
        "SELECT body FROM notifications WHERE recipient = 'operations' AND body LIKE $1",
        f"%{plc}%current%not baselined%",
    )
    assert sent is not None and "vibration" in sent


async def test_history_is_kept_and_the_latest_is_served(stack: Stack, pool: asyncpg.Pool) -> None:
    plc = f"bl-{uuid.uuid4().hex[:6]}"
    await insert_series(pool, plc, "vibration", np.linspace(1, 3, 400))
    await run_baselines(stack)
    await insert_series(pool, plc, "vibration", np.linspace(5, 9, 4000))
    await run_baselines(stack)
    rows = await pool.fetch(
        "SELECT mean FROM baselines WHERE plc_id = $1 ORDER BY computed_at", plc
    )
    assert len(rows) == 2 and rows[1]["mean"] > rows[0]["mean"]


async def test_recompute_changes_the_detectors_view_without_a_restart(
    stack: Stack, pool: asyncpg.Pool, settings: Settings
) -> None:
    plc = f"bl-{uuid.uuid4().hex[:6]}"
    alerts: list[object] = []
    detector = DriftDetector(DriftConfig(window_s=1.0, min_samples=1), alerts.append)
    loader = BaselineLoader(settings.pg_dsn, detector.set_baseline)
    await loader.start()
    try:
        now = datetime.now(UTC)
        for i in range(20):
            detector.observe(plc, "vibration", i * 0.1, 50.0, now)
        assert alerts == []  # no baseline yet: it cannot alarm
        loads = loader.loads
        await insert_series(pool, plc, "vibration", np.random.default_rng(1).normal(2.0, 0.2, 1000))
        await run_baselines(stack)
        # The NOTIFY reaches the loader: wait for its reload.
        await until("the baseline reload", lambda: loader.loads > loads)
        for i in range(20):
            detector.observe(plc, "vibration", 10 + i * 0.1, 50.0, now)
        assert len(alerts) == 1
    finally:
        await loader.stop()


async def test_the_schedule_runs_the_baseline_workflow_hourly(stack: Stack) -> None:
    desc = await stack.client.get_schedule_handle(BASELINE_SCHEDULE_ID).describe()
    assert desc.schedule.spec.intervals[0].every == timedelta(hours=1)
    action = desc.schedule.action
    assert getattr(action, "workflow", None) == "BaselineWorkflow"


async def test_minutes_around_a_detected_drift_are_not_learned(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    plc = f"bl-{uuid.uuid4().hex[:6]}"
    rng = np.random.default_rng(9)
    normal = rng.normal(2.0, 0.2, 2000)
    await insert_series(pool, plc, "vibration", normal)  # two hours ending a minute ago
    fault_at = datetime.now(UTC) - timedelta(minutes=30)
    fault = [(fault_at + timedelta(seconds=i), plc, "vibration", 9.0) for i in range(120)]
    await pool.copy_records_to_table(
        "samples", records=fault, columns=("time", "plc_id", "metric", "value")
    )
    await pool.execute(
        """INSERT INTO drift_events (workflow_id, plc_id, vendor, metric, magnitude_sigma,
               window_mean, baseline_mean, baseline_std, detected_at, text)
           VALUES ($1, $2, 'generic_modbus', 'vibration', 35, 9, 2, 0.2, $3, 'fault')""",
        f"drift-{plc}-vibration",
        plc,
        fault_at + timedelta(seconds=5),
    )
    report = await run_baselines(stack)
    (ours,) = [b for b in report.baselines if b.plc_id == plc]
    kept = [
        v
        for i, v in enumerate(normal)
        if abs(
            (
                datetime.now(UTC)
                - timedelta(minutes=1)
                - i * (timedelta(hours=2) / 2000)
                - fault_at
            ).total_seconds()
        )
        > 300
    ]
    assert (
        ours.mean == pytest.approx(2.0, abs=0.05) and ours.std < 0.3
    )  # the 9.0 fault is not in it
    assert ours.sample_count < len(normal) and abs(ours.sample_count - len(kept)) <= 2


async def test_the_lag_1_autocorrelation_is_computed_and_reaches_the_detectors_baseline(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    plc = f"bl-{uuid.uuid4().hex[:6]}"
    rng = np.random.default_rng(8)
    noise = rng.normal(0, 0.3 * np.sqrt(1 - 0.8**2), 6000)
    ar1 = np.empty_like(noise)
    level = 0.0
    for i, e in enumerate(noise):  # AR(1), φ = 0.8, by its definition
        level = 0.8 * level + e
        ar1[i] = 2.1 + level
    await insert_series(pool, plc, "vibration", ar1)
    await insert_series(pool, plc, "current", rng.normal(12, 1, 3000))  # independent
    report = await run_baselines(stack)
    ours = {b.metric: b for b in report.baselines if b.plc_id == plc}
    # Pearson's r of each sample with the one before it: numpy on the same pairs.
    assert ours["vibration"].phi == pytest.approx(np.corrcoef(ar1[1:], ar1[:-1])[0, 1], rel=1e-9)
    assert 0.75 < ours["vibration"].phi < 0.85
    assert abs(ours["current"].phi) < 0.06
    assert f"{ours['vibration'].phi:.2f}" in report.as_text()  # the report's φ column
    async with pool.acquire() as conn:
        latest = await load_latest(conn)
    assert latest[(plc, "vibration")].phi == pytest.approx(ours["vibration"].phi)
