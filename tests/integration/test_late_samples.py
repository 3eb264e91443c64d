"""Samples that arrive after their minutes were rolled up and left behind by the lookback
(migration 0025): an edge's backfill after a long outage notes them, the next lifecycle run
re-rolls those minutes, and samples older than the raw retention are folded into their minutes.
In a database of its own: the rollup watermark and drop_chunks are database-wide."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.lifecycle import LifecycleActivities
from app.deployment import apply_grants
from factorylm.db.pool import create_pool
from factorylm.models.lifecycle import DataLifecycleInput, DataLifecycleResult
from factorylm.settings import Settings
from helpers import own_database, refused_as, until
from ingest.spool import Spool
from ingest.writer import BatchWriter
from workers.registry import bind
from workflows.lifecycle import DataLifecycleWorkflow

Row = tuple[datetime, str, str, float]
MINUTE = timedelta(minutes=1)


@pytest.fixture
async def late_db(settings: Settings) -> AsyncIterator[Settings]:
    async with own_database(settings, "late") as own:
        yield own


async def _insert(conn: asyncpg.Connection, rows: list[Row]) -> None:
    await conn.copy_records_to_table(
        "samples", records=rows, columns=["time", "plc_id", "metric", "value"]
    )


async def _roll_up(
    conn: asyncpg.Connection, lookback: timedelta = timedelta(hours=2)
) -> datetime | None:
    """The owner's calls, as the activity makes them: until neither mark moves."""
    previous = None
    while True:
        watermark: datetime | None = await conn.fetchval(
            "SELECT factorylm_roll_up_samples(now(), $1, INTERVAL '6 hours')", lookback
        )
        state = (watermark, await conn.fetchval("SELECT reroll_from FROM data_lifecycle"))
        if state == previous:
            return watermark
        previous = state


def _by_minute(rows: list[Row]) -> dict[tuple[datetime, str], tuple[object, ...]]:
    """What a minute's rollup row must hold, from numpy on the generated samples."""
    groups: dict[tuple[datetime, str], list[tuple[datetime, float]]] = {}
    for t, _, metric, v in rows:
        groups.setdefault((t.replace(second=0, microsecond=0), metric), []).append((t, v))
    expected: dict[tuple[datetime, str], tuple[object, ...]] = {}
    for key, points in groups.items():
        values = np.array([v for _, v in points])
        last = max(points)[1]
        expected[key] = (
            len(values),
            pytest.approx(values.mean(), rel=1e-12),
            pytest.approx(((values - values.mean()) ** 2).sum(), rel=1e-9, abs=1e-12),
            values.min(),
            values.max(),
            last,
        )
    return expected


async def _rollups(
    conn: asyncpg.Connection, plc: str
) -> dict[tuple[datetime, str], tuple[object, ...]]:
    rows = await conn.fetch(
        "SELECT bucket, metric, samples, mean, m2, min, max, last FROM samples_1m "
        "WHERE plc_id = $1",
        plc,
    )
    return {(r["bucket"], r["metric"]): tuple(r)[2:] for r in rows}


async def _lifecycle(settings: Settings, client: Client) -> DataLifecycleResult:
    pool = await create_pool(settings, max_size=2)
    queue = f"late-{uuid.uuid4().hex[:8]}"
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
            result: DataLifecycleResult = await client.execute_workflow(
                DataLifecycleWorkflow.run,
                DataLifecycleInput(raw_retention_days=14, lookback_minutes=120),
                id=f"data-lifecycle-{queue}",
                task_queue=queue,
            )
            return result
    finally:
        await pool.close()


async def test_samples_backfilled_5_hours_late_reach_their_minutes_and_no_other_minute_moves(
    late_db: Settings, client: Client, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rng = np.random.default_rng(25)
    start = now - timedelta(hours=8)
    times = [start + i * timedelta(seconds=10) for i in range(8 * 360 - 12)]
    rows: list[Row] = [
        (t, "late-a", metric, float(v))
        for metric, loc in (("vibration", 2.0), ("current", 12.0))
        for t, v in zip(times, rng.normal(loc, 0.5, len(times)), strict=True)
    ]
    # The edge's link was cut 5 h ago, half a minute into that minute, for 40 minutes: what
    # it sampled meanwhile waited in its spool while the lifecycle rolled the rest up.
    cut_at = now - timedelta(hours=5) + timedelta(seconds=30)
    cut = (cut_at, cut_at + timedelta(minutes=40))
    late = sorted((r for r in rows if cut[0] <= r[0] < cut[1]), key=lambda r: r[0])
    live = [r for r in rows if not cut[0] <= r[0] < cut[1]]
    assert len(late) == 2 * 240
    conn = await asyncpg.connect(late_db.pg_dsn)
    try:
        await _insert(conn, live)
        first = await _lifecycle(late_db, client)
        assert first.rerolled_minutes == 0 and first.rerolled_from is None
        before = await _rollups(conn, "late-a")
        # The cut's first minute holds its first three samples per metric, the rest none.
        assert before[(now - timedelta(hours=5), "vibration")][0] == 3
        assert (now - timedelta(hours=5) + MINUTE, "vibration") not in before

        # The link is back: the edge's writer backfills its spool, 100 samples per COPY.
        spool = Spool(tmp_path / "spool", fsync_interval_s=0.05)
        for i in range(0, len(late), 20):  # one poll of both metrics every 10 s
            spool.append(late[i : i + 20])
        writer = BatchWriter(late_db.pg_dsn, max_delay_s=0.05, spool=spool, backfill_rows=100)
        writer.start()
        try:
            await until("the spool backfilled", lambda: writer.backfilled == len(late))
        finally:
            await writer.stop()
        assert await conn.fetchval("SELECT reroll_from FROM data_lifecycle") == now - timedelta(
            hours=5
        )
        watermark = await conn.fetchval("SELECT rolled_up_to FROM data_lifecycle")

        second = await _lifecycle(late_db, client)
        after = await _rollups(conn, "late-a")
        assert await conn.fetchval("SELECT reroll_from FROM data_lifecycle") is None
    finally:
        await conn.close()

    assert second.rerolled_from == now - timedelta(hours=5)
    # From the note to where the normal rollup's lookback began.
    assert (
        second.rerolled_minutes == (watermark - timedelta(hours=2) - second.rerolled_from) / MINUTE
    )
    expected = _by_minute(rows)
    assert set(after) == set(expected)
    touched = {(t.replace(second=0, microsecond=0), m) for t, _, m, _ in late}
    # The cut's 39 whole minutes and the two it began and ended in, per metric.
    assert len(touched) == 2 * 41
    for key in touched:
        assert after[key] == expected[key], key
    # Every other minute is the row the first run wrote (those re-rolled summed again in
    # another order, so m2 may differ in its last bit).
    untouched = set(before) - touched
    assert untouched == set(after) - touched
    for key in untouched:
        assert after[key] == pytest.approx(before[key], rel=1e-12, abs=1e-12), key


async def test_the_ingest_notes_only_minutes_the_lookback_left_behind_and_never_raises_the_mark(
    late_db: Settings,
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    conn = await asyncpg.connect(late_db.pg_dsn)
    try:
        await apply_grants(conn)
        await _insert(conn, [(now - timedelta(hours=h), "late-b", "m", 1.0) for h in range(1, 9)])
        await _roll_up(conn)
        watermark = await conn.fetchval("SELECT rolled_up_to FROM data_lifecycle")
        assert now - MINUTE <= watermark <= now

        async def note(age: timedelta) -> datetime | None:
            async with conn.transaction():
                await conn.execute("SET LOCAL ROLE factorylm_ingest")
                await conn.execute("SELECT factorylm_note_late_samples($1)", watermark - age)
            mark: datetime | None = await conn.fetchval("SELECT reroll_from FROM data_lifecycle")
            return mark

        s = timedelta(seconds=1)
        # Inside the 2-hour lookback: the next normal rollup re-rolls it anyway.
        assert await note(timedelta(hours=1, minutes=59)) is None
        assert await note(timedelta(hours=5) - 15 * s) == watermark - timedelta(hours=5)
        assert await note(timedelta(hours=3)) == watermark - timedelta(hours=5)  # not raised
        assert await note(timedelta(hours=7) - 15 * s) == watermark - timedelta(hours=7)

        # The ingest may note, but not roll up or drop; no other role may note.
        for call in (
            "SELECT factorylm_roll_up_samples(now(), '0', '1 hour')",
            "SELECT factorylm_drop_raw_samples('1 day', '0')",
            "SELECT factorylm_fold_in_late_samples(now())",
        ):
            await refused_as(conn, "factorylm_ingest", call)
        for role in ("factorylm_api", "factorylm_edge", "factorylm_agents", "grafana_reader"):
            await refused_as(conn, role, "SELECT factorylm_note_late_samples(now())")
    finally:
        await conn.close()


async def test_samples_older_than_the_raw_retention_are_folded_into_their_minutes(
    late_db: Settings,
) -> None:
    """Their minutes' other raw samples are gone: the late ones are added to the rollup row
    (count, mean, spread, extremes exact), never re-rolled over it, and then deleted, whether
    the rollup or the drop meets them first."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    a = now - timedelta(days=20)  # a minute rolled up, then dropped
    b = a + timedelta(hours=1)  # a minute that had no samples
    s = timedelta(seconds=1)
    rolled = [(a + i * 10 * s, "late-c", "m", v) for i, v in enumerate((3.0, -1.0, 4.0, 1.5))]
    kept = [
        (now - timedelta(days=2), "late-c", "m", 9.0),
        (now - timedelta(hours=1), "late-c", "m", 8.0),
    ]
    conn = await asyncpg.connect(late_db.pg_dsn)
    try:
        await _insert(conn, rolled + kept)
        await _roll_up(conn)
        assert await conn.fetchval("SELECT factorylm_drop_raw_samples('14 days', '2 hours')") == 1
        dropped = await conn.fetchval("SELECT dropped_before FROM data_lifecycle")
        assert dropped == now - timedelta(days=2)

        async def backfill(batch: list[Row]) -> None:  # as the writer's _copy_records does
            async with conn.transaction():
                await conn.execute(
                    "SELECT factorylm_note_late_samples($1)", min(r[0] for r in batch)
                )
                await _insert(conn, batch)

        # A first late batch, met by the rollup.
        first = [(a + 45 * s, "late-c", "m", 10.0), (b + 5 * s, "late-c", "m", 2.0)]
        await backfill(first)
        # Its oldest minute's raw samples are gone: only from dropped_before on is re-rolled.
        assert await conn.fetchval("SELECT reroll_from FROM data_lifecycle") == dropped
        await _roll_up(conn)
        assert await conn.fetchval("SELECT reroll_from FROM data_lifecycle") is None
        # A second one, met by the drop before any rollup: folded, not dropped with its chunk.
        second = [(a + 50 * s, "late-c", "m", -7.0), (b + 20 * s, "late-c", "m", 6.0)]
        await backfill(second)
        await conn.fetchval("SELECT factorylm_drop_raw_samples('14 days', '2 hours')")

        rows = await _rollups(conn, "late-c")
        assert await conn.fetchval("SELECT count(*) FROM samples WHERE time < $1", dropped) == 0
        assert await conn.fetchval("SELECT late_folded FROM data_lifecycle") == 4
    finally:
        await conn.close()

    # Every sample of minutes a and b, the dropped and the late, as numpy has them; `last` the
    # late samples' (a spool holds what came after the live samples, in time order).
    expected = _by_minute(rolled + first + second)
    assert rows[(a, "m")] == expected[(a, "m")]
    assert rows[(a, "m")][0] == 6 and rows[(a, "m")][5] == -7.0
    assert rows[(b, "m")] == expected[(b, "m")]
    assert rows[(b, "m")][0] == 2 and rows[(b, "m")][5] == 6.0
    for t, _, _, v in kept:
        assert rows[(t, "m")] == (1, v, 0.0, v, v, v)


async def test_a_shorter_lookback_still_rerolls_what_a_note_left_to_the_longer_one(
    late_db: Settings,
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    conn = await asyncpg.connect(late_db.pg_dsn)
    try:
        await _insert(conn, [(now - timedelta(hours=h), "late-d", "m", 1.0) for h in range(1, 6)])
        await _roll_up(conn, lookback=timedelta(hours=3))
        watermark = await conn.fetchval("SELECT rolled_up_to FROM data_lifecycle")
        minute = watermark - timedelta(hours=2, minutes=30)
        # Within the 3-hour lookback of the last rollup: not noted.
        async with conn.transaction():
            await conn.execute(
                "SELECT factorylm_note_late_samples($1)", minute + timedelta(seconds=5)
            )
            await _insert(conn, [(minute + timedelta(seconds=5), "late-d", "m", 4.0)])
        assert await conn.fetchval("SELECT reroll_from FROM data_lifecycle") is None
        # The operator lowers the lookback to an hour: that minute is re-rolled all the same.
        await _roll_up(conn, lookback=timedelta(hours=1))
        row = await conn.fetchrow(
            "SELECT samples, mean FROM samples_1m WHERE plc_id = 'late-d' AND bucket = $1", minute
        )
        assert row is not None and tuple(row) == (1, 4.0)
        assert await conn.fetchval("SELECT reroll_from FROM data_lifecycle") is None
    finally:
        await conn.close()
