"""Raw samples rolled up into 1-minute rows and dropped after retention (migration 0022,
activities/lifecycle.py, workflows/lifecycle.py), in a database of its own: the rollup watermark
and drop_chunks are database-wide, so other tests' samples stay out of it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.agents.watchman import Watchman
from activities.baselines import BaselineActivities
from activities.lifecycle import LifecycleActivities
from app.deployment import apply_grants
from factorylm.db.pool import create_pool
from factorylm.db.rollups import BASELINE_FROM_RAW, BASELINE_FROM_ROLLUPS
from factorylm.models.agents import WatchmanInput
from factorylm.models.baselines import ComputeBaselinesInput
from factorylm.models.lifecycle import DataLifecycleInput, DataLifecycleResult
from factorylm.settings import Settings
from helpers import own_database, refused_as
from workers.registry import bind
from workflows.lifecycle import DataLifecycleWorkflow

# Whole minutes well in the past: a minute is rolled up only once it is over.
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


@pytest.fixture
async def lifecycle_db(settings: Settings) -> AsyncIterator[Settings]:
    async with own_database(settings, "lc") as own:
        yield own


async def _insert(conn: asyncpg.Connection, rows: list[tuple[datetime, str, str, float]]) -> None:
    await conn.copy_records_to_table(
        "samples", records=rows, columns=["time", "plc_id", "metric", "value"]
    )


async def _roll_up(conn: asyncpg.Connection, lookback_min: int = 120) -> datetime | None:
    watermark: datetime | None = None
    while True:
        nxt = await conn.fetchval(
            "SELECT factorylm_roll_up_samples(now(), $1, INTERVAL '6 hours')",
            timedelta(minutes=lookback_min),
        )
        if nxt is None or nxt == watermark:
            return watermark
        watermark = nxt


async def test_a_minute_rollup_holds_its_count_mean_spread_extremes_and_last_value(
    lifecycle_db: Settings,
) -> None:
    conn = await asyncpg.connect(lifecycle_db.pg_dsn)
    try:
        # Minute 1: 1, 2, 3, 4 (last 4); minute 2: 10, 20 (last 20), written out of order.
        s = timedelta(seconds=1)
        await _insert(
            conn,
            [
                (T0 + 3 * s, "lc-a", "m", 4.0),
                (T0, "lc-a", "m", 1.0),
                (T0 + s, "lc-a", "m", 2.0),
                (T0 + 2 * s, "lc-a", "m", 3.0),
                (T0 + timedelta(minutes=1, seconds=30), "lc-a", "m", 20.0),
                (T0 + timedelta(minutes=1), "lc-a", "m", 10.0),
            ],
        )
        await _roll_up(conn)
        rows = await conn.fetch(
            "SELECT bucket, samples, mean, m2, min, max, last FROM samples_1m "
            "WHERE plc_id = 'lc-a' ORDER BY bucket"
        )
        assert [tuple(r) for r in rows] == [
            (T0, 4, 2.5, pytest.approx(5.0), 1.0, 4.0, 4.0),
            (T0 + timedelta(minutes=1), 2, 15.0, pytest.approx(50.0), 10.0, 20.0, 20.0),
        ]
        # Over both minutes: mean 40/6, sample std sqrt(263.333/5) = 7.2572, worked by hand.
        window = (T0, T0 + timedelta(minutes=2))
        (rolled,) = await conn.fetch(BASELINE_FROM_ROLLUPS, *window)
        assert rolled["n"] == 6
        assert rolled["mean"] == pytest.approx(6.666667, abs=1e-6)
        assert rolled["std"] == pytest.approx(7.2572, abs=1e-4)
        (raw,) = await conn.fetch(BASELINE_FROM_RAW, *window)
        assert rolled["std"] == pytest.approx(raw["std"], rel=1e-12)
    finally:
        await conn.close()


async def test_a_late_sample_within_the_lookback_lands_in_its_minute(
    lifecycle_db: Settings,
) -> None:
    conn = await asyncpg.connect(lifecycle_db.pg_dsn)
    try:
        await _insert(conn, [(T0, "lc-b", "m", 1.0), (T0 + timedelta(hours=1), "lc-b", "m", 5.0)])
        await _roll_up(conn)
        # A store-and-forward backlog arrives for the first minute after it was rolled up.
        await _insert(conn, [(T0 + timedelta(seconds=10), "lc-b", "m", 3.0)])
        await _roll_up(conn, lookback_min=24 * 60 * 365)
        first = await conn.fetchrow(
            "SELECT samples, mean, last FROM samples_1m WHERE plc_id = 'lc-b' AND bucket = $1", T0
        )
        assert tuple(first) == (2, 2.0, 3.0)
    finally:
        await conn.close()


async def test_raw_chunks_go_after_retention_only_once_rolled_up_and_never_under_a_day(
    lifecycle_db: Settings,
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    conn = await asyncpg.connect(lifecycle_db.pg_dsn)
    try:
        ages = {"20d": timedelta(days=20), "16d": timedelta(days=16), "2d": timedelta(days=2)}
        ages["12h"] = timedelta(hours=12)
        await _insert(conn, [(now - age, "lc-c", name, 1.0) for name, age in ages.items()])

        async def metrics_left() -> set[str]:
            return {r["metric"] for r in await conn.fetch("SELECT metric FROM samples")}

        # Nothing rolled up yet: nothing may go, whatever the retention.
        assert await conn.fetchval("SELECT factorylm_drop_raw_samples('1 day', '0')") == 0
        assert await metrics_left() == set(ages)

        await _roll_up(conn)
        dropped = await conn.fetchval("SELECT factorylm_drop_raw_samples('14 days', '2 hours')")
        assert dropped == 2
        assert await metrics_left() == {"2d", "12h"}
        # Their minutes are still in the rollups.
        kept = {r["metric"] for r in await conn.fetch("SELECT metric FROM samples_1m")}
        assert kept == set(ages)

        # An hour's retention is taken as the one-day minimum: the 12-hour-old sample stays.
        await conn.fetchval("SELECT factorylm_drop_raw_samples('1 hour', '0')")
        assert await metrics_left() == {"12h"}
    finally:
        await conn.close()


async def test_only_the_agents_role_runs_the_lifecycle_and_it_cannot_drop_chunks_itself(
    lifecycle_db: Settings,
) -> None:
    conn = await asyncpg.connect(lifecycle_db.pg_dsn)
    try:
        await apply_grants(conn)
        async with conn.transaction():
            await conn.execute("SET LOCAL ROLE factorylm_agents")
            await conn.fetchval("SELECT factorylm_roll_up_samples(now(), '0', '1 hour')")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("SELECT drop_chunks('samples', older_than => now())")
        for role in ("factorylm_api", "factorylm_ingest", "factorylm_edge", "grafana_reader"):
            await refused_as(conn, role, "SELECT factorylm_drop_raw_samples('1 day', '0')")
    finally:
        await conn.close()


async def test_the_lifecycle_workflow_rolls_up_then_drops_through_temporal(
    lifecycle_db: Settings,
    client: Client,
    record_history: Callable[[WorkflowHandle[Any, Any], str], Awaitable[None]],
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    conn = await asyncpg.connect(lifecycle_db.pg_dsn)
    try:
        # Three weeks of one sample an hour: the first run rolls up in many bounded steps.
        hours = 21 * 24
        await _insert(
            conn, [(now - timedelta(hours=h), "lc-d", "m", float(h)) for h in range(1, hours)]
        )
    finally:
        await conn.close()
    pool = await create_pool(lifecycle_db, max_size=2)
    queue = f"lifecycle-{uuid.uuid4().hex[:8]}"
    try:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[DataLifecycleWorkflow],
            activities=bind(
                [LifecycleActivities.roll_up_samples, LifecycleActivities.drop_raw_samples],
                [LifecycleActivities(pool)],
            ),
        ):
            handle = await client.start_workflow(
                DataLifecycleWorkflow.run,
                DataLifecycleInput(raw_retention_days=14),
                id=f"data-lifecycle-{queue}",
                task_queue=queue,
            )
            result: DataLifecycleResult = await handle.result()
            await record_history(handle, "data_lifecycle")
        # 3 weeks in steps of at most 6 h: at least 84 steps; the watermark stops a minute short
        # of now.
        assert result.rollup_steps >= 84
        assert result.rolled_up_to is not None and now - result.rolled_up_to < timedelta(minutes=2)
        assert result.chunks_dropped >= 5
        async with pool.acquire() as c:
            oldest = await c.fetchval("SELECT min(time) FROM samples")
            rolled = await c.fetchval("SELECT count(*) FROM samples_1m WHERE plc_id = 'lc-d'")
        assert timedelta(days=14) <= now - oldest < timedelta(days=16)
        assert rolled == hours - 1
    finally:
        await pool.close()


async def test_a_baseline_after_raw_samples_were_dropped_equals_the_one_before(
    lifecycle_db: Settings,
) -> None:
    """72 hours of samples every 10 s, rolled up, and every raw chunk older than a day dropped:
    the mean, spread and count read through the rollups are those numpy gives for every sample
    generated; the percentiles and φ are those of the samples still raw."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    step = timedelta(seconds=10)
    n = 71 * 360
    times = [now - timedelta(minutes=2) - i * step for i in range(n)][::-1]
    rng = np.random.default_rng(18)
    noise = rng.normal(0, 0.3 * np.sqrt(1 - 0.6**2), n)
    vibration = np.empty(n)
    level = 0.0
    for i, e in enumerate(noise):  # AR(1), φ = 0.6, by its definition
        level = 0.6 * level + e
        vibration[i] = 2.0 + level
    current = rng.normal(12.0, 1.0, n)
    # A drift 60 hours ago, half a minute into its minute: before the drop the samples within
    # its ±5 minutes are left out, after it the whole minutes they touch.
    drift_at = now - timedelta(hours=60, seconds=-30)
    window = ComputeBaselinesInput(
        run_key="before", window_start=now - timedelta(hours=72), window_end=now
    )
    pool = await create_pool(lifecycle_db, max_size=2)
    try:
        async with pool.acquire() as conn:
            await _insert(
                conn,
                [(t, "lc-b", "vibration", float(v)) for t, v in zip(times, vibration, strict=True)]
                + [(t, "lc-b", "current", float(v)) for t, v in zip(times, current, strict=True)],
            )
            await conn.execute(
                """INSERT INTO drift_events (workflow_id, plc_id, vendor, metric,
                       magnitude_sigma, window_mean, baseline_mean, baseline_std, detected_at,
                       text)
                   VALUES ('drift-lc-b-current', 'lc-b', 'generic_modbus', 'current', 3, 15, 12,
                           1, $1, 'fault')""",
                drift_at,
            )
        baselines = BaselineActivities(pool)
        before = {b.metric: b for b in (await baselines.compute_baselines(window)).baselines}

        async with pool.acquire() as conn:
            await _roll_up(conn)
            assert await conn.fetchval("SELECT factorylm_drop_raw_samples('1 day', '2 hours')") > 0
            raw_from = await conn.fetchval("SELECT dropped_before FROM data_lifecycle")
            assert await conn.fetchval("SELECT min(time) FROM samples") == raw_from
        # Day chunks: what is left starts between 48 and 24 hours ago.
        assert timedelta(hours=24) <= now - raw_from <= timedelta(hours=48)
        after_report = await baselines.compute_baselines(
            window.model_copy(update={"run_key": "after"})
        )
        after = {b.metric: b for b in after_report.baselines}
    finally:
        await pool.close()

    at = np.array([t.timestamp() for t in times])
    left = at >= raw_from.timestamp()
    v_left = vibration[left]
    # Everything generated, through rollups and raw samples: as numpy, and as before the drop.
    for b in (before["vibration"], after["vibration"]):
        assert b.sample_count == n
        assert b.mean == pytest.approx(np.mean(vibration), rel=1e-12)
        assert b.std == pytest.approx(np.std(vibration, ddof=1), rel=1e-9)
    assert before["vibration"].p95 == pytest.approx(np.percentile(vibration, 95), rel=1e-12)
    assert before["vibration"].phi == pytest.approx(
        np.corrcoef(vibration[1:], vibration[:-1])[0, 1], rel=1e-9
    )
    # The percentiles and φ come from the samples still raw (a minute keeps no distribution,
    # and minute means are not consecutive samples).
    assert after["vibration"].p95 == pytest.approx(np.percentile(v_left, 95), rel=1e-12)
    assert after["vibration"].p99 == pytest.approx(np.percentile(v_left, 99), rel=1e-12)
    assert after["vibration"].phi == pytest.approx(
        np.corrcoef(v_left[1:], v_left[:-1])[0, 1], rel=1e-9
    )
    assert 0.55 < after["vibration"].phi < 0.65

    d = drift_at.timestamp()
    in_band = np.abs(at - d) <= 300
    minute = np.floor(at / 60) * 60
    touches = (minute <= d + 300) & (minute + 60 > d - 300)
    # The whole minutes add the samples 30, 20, 10 s before the band and 10, 20 s after it
    # (its ends are in it).
    assert touches.sum() == in_band.sum() + 5
    for b, out in ((before["current"], in_band), (after["current"], touches & ~left)):
        assert b.sample_count == n - out.sum()
        assert b.mean == pytest.approx(np.mean(current[~out]), rel=1e-12)
        assert b.std == pytest.approx(np.std(current[~out], ddof=1), rel=1e-9)


async def test_the_watchman_over_hours_reads_the_rollups_once_raw_samples_are_gone(
    lifecycle_db: Settings,
) -> None:
    """12 hours of three metrics every 5 s, ending 50 hours ago: a 6-hour window in 12-minute
    buckets finds the same correlations and shifts before and after every raw sample of it is
    dropped, those numpy gives on the generated samples."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=50)
    n = 12 * 720
    times = [end - timedelta(hours=12) + timedelta(seconds=2.5 + 5 * i) for i in range(n)]
    rng = np.random.default_rng(4)
    ramp = np.clip((np.arange(n) - n / 2) / (n / 2), 0, None)  # calm, then 6 hours of ramp
    series = {
        "vibration": 2.0 + 3.0 * ramp + rng.normal(0, 0.05, n),
        "motor_temp": 50.0 + 8.0 * ramp + rng.normal(0, 0.1, n),
        "current": 12.0 + rng.normal(0, 0.2, n),
    }
    ask = WatchmanInput(plc_id="lc-w", metric="vibration", end=end, window_s=6 * 3600, bucket_s=720)
    pool = await create_pool(lifecycle_db, max_size=2)
    try:
        async with pool.acquire() as conn:
            await _insert(
                conn,
                [
                    (t, "lc-w", metric, float(v))
                    for metric, values in series.items()
                    for t, v in zip(times, values, strict=True)
                ],
            )
            await _roll_up(conn)
        before = await Watchman(pool).watchman(ask)
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT factorylm_drop_raw_samples('1 day', '2 hours')") > 0
            assert await conn.fetchval("SELECT count(*) FROM samples WHERE plc_id = 'lc-w'") == 0
        after = await Watchman(pool).watchman(ask)
    finally:
        await pool.close()

    at = np.array([t.timestamp() for t in times])
    now = at > (end - timedelta(hours=6)).timestamp()
    buckets = np.floor(at / 720) * 720
    keys = np.unique(buckets[now])

    def bucket_means(metric: str) -> np.ndarray:
        return np.array([series[metric][now & (buckets == b)].mean() for b in keys])

    for result in (before, after):
        by_metric = {m.metric: m for m in result.movements}
        assert set(by_metric) == {"motor_temp", "current"}
        for metric, m in by_metric.items():
            r = np.corrcoef(bucket_means("vibration"), bucket_means(metric))[0, 1]
            calm = series[metric][~now]
            shift = (series[metric][now].mean() - calm.mean()) / calm.std(ddof=1)
            assert m.buckets == len(keys) >= 30  # 6 h in 12 min, ends not on the grid
            assert m.correlation == pytest.approx(r, abs=5e-4)
            assert m.shift_sigma == pytest.approx(shift, abs=5e-3)
        assert by_metric["motor_temp"].moved and not by_metric["current"].moved
