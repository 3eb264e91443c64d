"""Finding 8: a NaN or ±inf from a failed sensor is not a sample. It is rejected where values
are decoded, counted per PLC·metric (collector_status, GET /collectors), and never reaches
the hypertable, a drift window or a baseline — nor does one already in the database.

A real Modbus peer (dev/simulator, pymodbus's server) serves f32 registers holding NaN and
-inf to the real ingest: collector, batch writer (COPY into PostgreSQL), drift detector and
workflow starter on the real Temporal server.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import numpy as np
import pytest
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.baselines import BaselineActivities
from api.app import create_app
from dev.simulator.modbus import SimulatedModbusPlc
from dev.simulator.signals import FaultKind
from factorylm.channels import BASELINES_CHANNEL
from factorylm.models.baselines import ComputeBaselinesInput
from factorylm.plant import Baseline, Plant
from factorylm.settings import Settings
from helpers import TANK_METRICS, modbus_plant, until
from ingest.baselines import BaselineLoader
from ingest.drift import DriftConfig, DriftDetector
from ingest.service import IngestService


def tank_plant(plc_id: str) -> Plant:
    return modbus_plant([plc_id], TANK_METRICS)


@pytest.fixture
async def tank() -> AsyncIterator[tuple[Plant, SimulatedModbusPlc]]:
    plant = tank_plant(f"tank-{uuid.uuid4().hex[:6]}")
    sim = SimulatedModbusPlc(plant.plcs[0], seed=11, tick_s=0.025)
    await sim.start()
    yield plant, sim
    await sim.stop()


def bearer(settings: Settings) -> str:
    token = settings.api_token
    return token.get_secret_value() if isinstance(token, SecretStr) else str(token)


async def test_non_finite_sensor_values_are_rejected_counted_and_never_stop_detection(
    tank: tuple[Plant, SimulatedModbusPlc], settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    plant, sim = tank
    plc_id = plant.plcs[0].id
    # Two sensors fail: their registers hold what a failed f32 input reads as.
    for metric, bad in (("level", math.nan), ("pressure", -math.inf)):
        sim.inject(metric, FaultKind.DROPOUT)  # the simulated program stops updating it
        await sim._write(metric, bad)
    s = settings.model_copy(update={"task_queue": f"sec-nan-{uuid.uuid4().hex[:8]}"})
    service = IngestService(
        s, plant, client, drift=DriftConfig(window_s=1.0, on_delay_s=0.0, min_samples=3)
    )
    collector = service.collectors[0]
    started: list[str] = []
    await service.start()
    try:
        await until(
            "bad samples counted for both sensors",
            lambda: min(collector.bad_samples.get(m, 0) for m in ("level", "pressure")) >= 5,
        )
        await until(
            "good temperature samples stored",
            lambda: pool.fetchval(
                "SELECT count(*) >= 5 FROM samples WHERE plc_id = $1 AND metric = 'temp'", plc_id
            ),
        )
        # The healthy sensor is unaffected and nothing non-finite reached the hypertable.
        stored = await pool.fetchrow(
            """SELECT count(*) FILTER (WHERE metric = 'temp') AS temp,
                      count(*) FILTER (WHERE NOT abs(value) < 'Infinity'::float8) AS non_finite,
                      count(*) FILTER (WHERE metric IN ('level', 'pressure')) AS failed_sensors
               FROM samples WHERE plc_id = $1""",
            plc_id,
        )
        assert stored["temp"] >= 5 and stored["non_finite"] == 0
        assert stored["failed_sensors"] == 0
        assert service.detector.alarms_raised == 0 and not service.starter.started

        # The count is in the status table and behind GET /collectors.
        await service.manager.write_status()
        app = create_app(s, client, pool)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api"
        ) as http:
            response = await http.get(
                "/collectors", headers={"Authorization": f"Bearer {bearer(s)}"}
            )
        assert response.status_code == 200
        row = {c["plc_id"]: c for c in response.json()["collectors"]}[plc_id]
        counts = row["bad_samples"]
        counts = json.loads(counts) if isinstance(counts, str) else counts
        assert counts["level"] >= 5 and counts["pressure"] >= 5 and "temp" not in counts
        assert row["state"] == "ok"  # the PLC answers; two of its sensors do not measure

        # The level sensor is repaired, and then the tank really drifts: the detector, never
        # fed a NaN, alarms once with a finite magnitude.
        sim.clear("level")
        await until("finite level samples", lambda: "level" not in collector._bad_now)
        sim.inject("level", FaultKind.STEP, 6.0)
        first = await until(
            "a drift alarm on the level",
            lambda: next((a for a in service.starter.started if a.alert.metric == "level"), None),
        )
        started.append(first.workflow_id)
        assert math.isfinite(first.alert.sigma) and first.alert.sigma > 2
        assert math.isfinite(first.alert.window_mean)
    finally:
        await service.stop()
        for workflow_id in started:  # nobody polls this test's queue
            await client.get_workflow_handle(workflow_id).terminate("test over")


def test_a_non_finite_value_or_baseline_never_enters_the_detector() -> None:
    alarms: list[object] = []
    detector = DriftDetector(DriftConfig(window_s=10.0, min_samples=3), alarms.append)
    detector.set_baseline("p", "m", Baseline(mean=0.0, std=1.0))
    when = datetime.now(UTC)
    for t, value in enumerate([0.1, math.nan, -0.1, math.inf, 0.0, -math.inf]):
        detector.observe("p", "m", float(t), value, when)
    assert alarms == [] and not detector.alarmed("p", "m")
    # A baseline that is not a finite number with a positive std keeps the one in use.
    detector.set_baseline("p", "m", Baseline.model_construct(mean=math.nan, std=1.0))
    for t in range(6, 12):
        detector.observe("p", "m", float(t), 5.0, when)  # a real +5σ drift
    assert len(alarms) == 1 and detector.alarmed("p", "m")


async def test_non_finite_rows_already_in_samples_do_not_poison_the_baseline(
    pool: asyncpg.Pool,
) -> None:
    plc_id = f"nanbase-{uuid.uuid4().hex[:6]}"
    end = datetime.now(UTC) - timedelta(minutes=1)
    good = np.random.default_rng(12).normal(10.0, 0.5, 300)
    values = [*map(float, good), math.nan, math.inf, -math.inf, math.nan]
    step = timedelta(hours=1) / len(values)
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "samples",
            records=[(end - i * step, plc_id, "level", v) for i, v in enumerate(values)],
            columns=("time", "plc_id", "metric", "value"),
        )
    try:
        report = await ActivityEnvironment().run(
            BaselineActivities(pool).compute_baselines,
            ComputeBaselinesInput(
                run_key=f"nan-{plc_id}",
                window_start=end - timedelta(hours=2),
                window_end=end + timedelta(seconds=1),
            ),
        )
    finally:
        # Other tests (and GET /baselines) share this database: take the bad rows away.
        await pool.execute("DELETE FROM samples WHERE plc_id = $1", plc_id)
    mine = [b for b in report.baselines if b.plc_id == plc_id]
    assert len(mine) == 1, report.skipped
    baseline = mine[0]
    assert baseline.sample_count == len(good)
    assert baseline.mean == pytest.approx(float(np.mean(good)))
    assert baseline.std == pytest.approx(float(np.std(good, ddof=1)))
    assert all(math.isfinite(v) for v in (baseline.p95, baseline.p99))


async def test_a_nan_baseline_row_does_not_stop_the_baseline_reload(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    plc_id = f"nanload-{uuid.uuid4().hex[:6]}"
    rows = [
        ("old", "level", 50.0, 1.0),  # the last usable one for level
        ("new", "level", math.nan, math.nan),  # written later
        ("new", "pressure", 3.0, math.inf),
        ("new", "temp", 20.0, 0.5),
    ]
    for run_key, metric, mean, std in rows:
        await pool.execute(
            """INSERT INTO baselines (run_key, plc_id, metric, mean, std, p95, p99,
                   sample_count, window_start, window_end, computed_at)
               VALUES ($1, $2, $3, $4, $5, 0, 0, 100, now(), now(),
                       now() - CASE WHEN $1 = 'old' THEN interval '1 hour' ELSE interval '0' END)""",
            f"{run_key}-{plc_id}",
            plc_id,
            metric,
            mean,
            std,
        )
    loaded: dict[str, Baseline] = {}

    def sink(plc: str, metric: str, baseline: Baseline) -> None:
        if plc == plc_id:
            loaded[metric] = baseline

    loader = BaselineLoader(settings.pg_dsn, sink)
    await loader.start()
    try:
        assert loaded == {
            "level": Baseline(mean=50.0, std=1.0),
            "temp": Baseline(mean=20.0, std=0.5),
        }
        # And it keeps listening: the next announcement is still heard and loaded.
        await pool.execute(
            """INSERT INTO baselines (run_key, plc_id, metric, mean, std, p95, p99,
                   sample_count, window_start, window_end)
               VALUES ($1, $2, 'pressure', 3.0, 0.1, 0, 0, 100, now(), now())""",
            f"newer-{plc_id}",
            plc_id,
        )
        await pool.execute(f"NOTIFY {BASELINES_CHANNEL}")
        await until("the reload after the notify", lambda: "pressure" in loaded)
        assert loaded["pressure"] == Baseline(mean=3.0, std=0.1)
    finally:
        await loader.stop()
        # Other tests (and GET /baselines) share this database: take the bad rows away.
        await pool.execute("DELETE FROM baselines WHERE plc_id = $1", plc_id)
