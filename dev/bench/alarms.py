"""`factorylm bench alarm_journal`: what alarm management costs on the real database.

Two lines. `alarm_kpis_p99_ms`: the daily summary's alarm KPIs (factorylm/alarms.py) over a
day's journal of a plant over-demanding by ISA-18.2's measure — 1 000 alarms a day on 200 points,
a one-hour flood of 300 among them, every alarm cleared — against the plainest query over the
same rows (one count of the day's raises), in the same run. `narration_p99_ms`: from a message
row's insert to the demo narrator's printed line (trigger, NOTIFY, LISTEN, the row read back),
against a bare `SELECT 1` round trip.

The rows are written in 2019 under a site of their own and deleted afterwards, so the plant's
own KPIs never see them.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from dev.bench.report import p99_line
from dev.demo.narrator import Narrator
from factorylm.alarms import alarm_kpis
from factorylm.settings import Settings

_DAY0 = datetime(2019, 6, 3, tzinfo=UTC)
_POINTS = 200
_ALARMS = 1000
_FLOOD = 300


def _journal(site: str, rng: random.Random) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []

    def alarm(at: datetime, point: int, annunciation: str) -> None:
        plc, code = f"{site}-p{point}", f"{site}-A{point}"
        rows.append((at, site, plc, "m", code, "raise", annunciation))
        rows.append((at + timedelta(seconds=30), site, plc, "m", code, "clear", None))

    for _ in range(_ALARMS - _FLOOD):
        alarm(_DAY0 + timedelta(seconds=rng.uniform(0, 86_400)), rng.randrange(_POINTS), "sent")
    flood_start = _DAY0 + timedelta(hours=14)
    for i in range(_FLOOD):
        at = flood_start + timedelta(seconds=rng.uniform(0, 3600))
        alarm(at, rng.randrange(_POINTS), "sent" if i < 10 else "flood")
    return rows


async def _kpis(pool: asyncpg.Pool, rounds: int) -> dict[str, Any]:
    until = _DAY0 + timedelta(days=1)
    kpis, anchor = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        k = await alarm_kpis(pool, _DAY0, until, flood_alarms=10)
        kpis.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        await pool.fetchval(
            """SELECT count(*) FROM alarm_journal
               WHERE event = 'raise' AND at >= $1 AND at < $2""",
            _DAY0,
            until,
        )
        anchor.append((time.perf_counter() - t0) * 1000)
    return p99_line(
        "alarm_kpis_p99_ms",
        kpis,
        anchor,
        "p99 of one count of the day's raises over the same journal",
        rounds=rounds,
        journal_rows=2 * _ALARMS,
        raised=k.raised,
        per_10_min=k.per_10_min,
        peak_10_min=k.peak_10_min,
        flood_pct=k.flood_pct,
    )


async def _narration(settings: Settings, pool: asyncpg.Pool, rounds: int) -> dict[str, Any]:
    printed: dict[str, float] = {}
    arrived = asyncio.Event()

    def say(line: str) -> None:
        # Only this benchmark's messages: the narrator hears the whole database.
        if line.startswith("message to bench on log: '"):
            printed[line.rsplit("'", 2)[-2]] = time.perf_counter()
            arrived.set()

    narrator = Narrator(settings.pg_dsn, say)
    await narrator.start()
    written: dict[str, float] = {}
    anchor = []
    try:
        tag = uuid.uuid4().hex[:8]
        for i in range(rounds):
            body = f"bench-{tag}-{i}"
            arrived.clear()
            written[body] = time.perf_counter()
            await pool.execute(
                """INSERT INTO notifications (dedup_key, channel, recipient, body)
                   VALUES ($1, 'log', 'bench', $2)""",
                f"bench/narration/{body}",
                body,
            )
            while body not in printed:  # one at a time: the latency, not a queue's depth
                await asyncio.wait_for(arrived.wait(), 10)
                arrived.clear()
            t0 = time.perf_counter()
            await pool.fetchval("SELECT 1")
            anchor.append((time.perf_counter() - t0) * 1000)
        await pool.execute(
            "DELETE FROM notifications WHERE dedup_key LIKE $1", f"bench/narration/bench-{tag}-%"
        )
    finally:
        await narrator.stop()
    latencies = [(printed[b] - t) * 1000 for b, t in written.items()]
    return p99_line(
        "narration_p99_ms",
        latencies,
        anchor,
        "p99 of a bare SELECT 1 round trip",
        rounds=rounds,
    )


async def alarm_journal(
    settings: Settings, kpi_rounds: int = 50, narration_rounds: int = 300
) -> list[dict[str, Any]]:
    site = f"bench{uuid.uuid4().hex[:6]}"
    pool = await asyncpg.create_pool(settings.pg_dsn, min_size=1, max_size=2)
    try:
        await pool.executemany(
            """INSERT INTO alarm_journal (at, site, plc_id, metric, code, event, annunciation)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            _journal(site, random.Random(16)),
        )
        await pool.execute("ANALYZE alarm_journal")
        try:
            kpis = await _kpis(pool, kpi_rounds)
        finally:
            await pool.execute("DELETE FROM alarm_journal WHERE site = $1", site)
        narration = await _narration(settings, pool, narration_rounds)
    finally:
        await pool.close()
    return [kpis, narration]
