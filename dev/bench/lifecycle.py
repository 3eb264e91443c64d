"""`lifecycle`: what the rollup and the retention drop do to a synthetic two weeks and more.

A database of its own gets 16 days of 1 Hz samples for a few PLC·metrics (made by PostgreSQL
itself, so the bench measures the lifecycle, not a loader); then the product's rollup and drop
run at the shipped defaults (14 days of raw samples, 120 min lookback). Reported: rows and bytes
before and after, how long each step took, and a 48-hour baseline read from the rollups
(value) against the same figures read from raw samples (anchor), p50 over rounds.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from factorylm.db.pool import prepare_database
from factorylm.db.rollups import BASELINE_FROM_RAW, BASELINE_FROM_ROLLUPS
from factorylm.settings import Settings

SERIES = 4  # PLC·metric pairs
DAYS = 16
ROUNDS = 15


async def _sizes(conn: asyncpg.Connection) -> dict[str, int]:
    return {
        "raw_rows": await conn.fetchval("SELECT count(*) FROM samples"),
        "rollup_rows": await conn.fetchval("SELECT count(*) FROM samples_1m"),
        "raw_bytes": await conn.fetchval("SELECT hypertable_size('samples')"),
        "rollup_bytes": await conn.fetchval("SELECT hypertable_size('samples_1m')"),
    }


async def _p50_ms(conn: asyncpg.Connection, sql: str, *args: object) -> tuple[float, list[Any]]:
    times, rows = [], []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        rows = await conn.fetch(sql, *args)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), rows


async def lifecycle(settings: Settings) -> dict[str, Any]:
    own = settings.model_copy(update={"pg_database": f"{settings.pg_database}_bench_lifecycle"})
    admin = await asyncpg.connect(settings.dsn_for("postgres"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{own.pg_database}" WITH (FORCE)')
    await prepare_database(own)
    conn = await asyncpg.connect(own.pg_dsn, command_timeout=3600)
    try:
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        print(f"[lifecycle] generating {DAYS} days of 1 Hz samples for {SERIES} series", flush=True)
        await conn.execute(
            """INSERT INTO samples (time, plc_id, metric, value)
               SELECT t, 'bench-plc-' || s, 'vibration', 2 + sin(extract(epoch FROM t) / 600)
                                                          + random() * 0.1
               FROM generate_series($1::timestamptz, $2::timestamptz, INTERVAL '1 second') t,
                    generate_series(1, $3) s""",
            now - timedelta(days=DAYS),
            now - timedelta(seconds=1),
            SERIES,
        )
        await conn.execute("ANALYZE samples")
        before = await _sizes(conn)

        t0 = time.perf_counter()
        steps, watermark = 0, None
        while True:
            nxt = await conn.fetchval(
                "SELECT factorylm_roll_up_samples(now(), $1, INTERVAL '6 hours')",
                timedelta(minutes=settings.rollup_lookback_minutes),
            )
            steps += 1
            if nxt is None or nxt == watermark:
                break
            watermark = nxt
        rollup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        chunks = await conn.fetchval(
            "SELECT factorylm_drop_raw_samples($1, $2)",
            timedelta(days=settings.raw_retention_days),
            timedelta(minutes=settings.rollup_lookback_minutes),
        )
        drop_s = time.perf_counter() - t0
        await conn.execute("ANALYZE samples; ANALYZE samples_1m")
        after = await _sizes(conn)

        window = (now - timedelta(hours=50), now - timedelta(hours=2))
        value, from_rollups = await _p50_ms(conn, BASELINE_FROM_ROLLUPS, *window)
        anchor, from_raw = await _p50_ms(conn, BASELINE_FROM_RAW, *window)
        raw_by_key = {(r["plc_id"], r["metric"]): r for r in from_raw}
        worst = max(
            abs(r["std"] - raw_by_key[(r["plc_id"], r["metric"])]["std"])
            / raw_by_key[(r["plc_id"], r["metric"])]["std"]
            for r in from_rollups
        )
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{own.pg_database}" WITH (FORCE)')
        await admin.close()
    total_before = before["raw_bytes"] + before["rollup_bytes"]
    total_after = after["raw_bytes"] + after["rollup_bytes"]
    return {
        "bench": "lifecycle",
        "value": round(value, 2),
        "unit": "ms p50, 48-h baseline of every series from 1-minute rollups",
        "anchor": round(anchor, 2),
        "anchor_unit": "ms p50, the same baseline from raw samples",
        "ratio": round(value / anchor, 4),
        "baseline_std_max_rel_diff": worst,
        "series": SERIES,
        "days": DAYS,
        "raw_retention_days": settings.raw_retention_days,
        "rows_before": before["raw_rows"] + before["rollup_rows"],
        "rows_after": after["raw_rows"] + after["rollup_rows"],
        "raw_rows_after": after["raw_rows"],
        "rollup_rows": after["rollup_rows"],
        "bytes_before": total_before,
        "bytes_after": total_after,
        "rollup_bytes": after["rollup_bytes"],
        # What a year costs per PLC·metric at 1 Hz: raw for the retention, rollups for the rest.
        "raw_bytes_per_series_day": round(before["raw_bytes"] / SERIES / DAYS),
        "rollup_bytes_per_series_day": round(after["rollup_bytes"] / SERIES / DAYS),
        "rollup_s": round(rollup_s, 1),
        "rollup_steps": steps,
        "drop_s": round(drop_s, 2),
        "chunks_dropped": chunks,
        "rounds": ROUNDS,
    }
