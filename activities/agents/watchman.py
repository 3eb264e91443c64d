"""Watchman: which other metrics on the same machine moved with the drifting one.

Both figures come from TimescaleDB in one query: Pearson correlation over time_bucket'ed means
in the window, and each metric's shift against the preceding window of the same length.
"""

from __future__ import annotations

import asyncpg
from temporalio import activity

from factorylm.models.agents import MetricMovement, WatchmanInput, WatchmanResult

# |r| at least this over at least MIN_BUCKETS buckets, or a shift of SHIFT_SIGMA, is "moved".
MOVED_CORRELATION = 0.7
MIN_BUCKETS = 5
SHIFT_SIGMA = 2.0

_SQL = """
WITH params AS (
    SELECT make_interval(secs => $4::float8) AS bucket, make_interval(secs => $5::float8) AS win
),
buckets AS (
    SELECT time_bucket((SELECT bucket FROM params), time) AS t, metric, avg(value) AS v
    FROM samples
    WHERE plc_id = $1 AND time > $3::timestamptz - (SELECT win FROM params) AND time <= $3::timestamptz
    GROUP BY 1, 2
),
target AS (SELECT t, v FROM buckets WHERE metric = $2),
paired AS (
    SELECT b.metric, corr(target.v, b.v) AS r, count(*) AS n
    FROM buckets b JOIN target USING (t)
    WHERE b.metric <> $2
    GROUP BY b.metric
),
now_stats AS (
    SELECT metric, avg(value) AS m
    FROM samples
    WHERE plc_id = $1 AND time > $3::timestamptz - (SELECT win FROM params) AND time <= $3::timestamptz
    GROUP BY metric
),
before_stats AS (
    SELECT metric, avg(value) AS m, stddev_samp(value) AS sd
    FROM samples
    WHERE plc_id = $1 AND time > $3::timestamptz - 2 * (SELECT win FROM params)
      AND time <= $3::timestamptz - (SELECT win FROM params)
    GROUP BY metric
)
SELECT paired.metric, paired.r, paired.n,
       (now_stats.m - before_stats.m) / nullif(before_stats.sd, 0) AS shift
FROM paired
LEFT JOIN now_stats USING (metric)
LEFT JOIN before_stats USING (metric)
ORDER BY abs(coalesce(paired.r, 0)) DESC, paired.metric
"""


def _moved(r: float | None, n: int, shift: float | None) -> bool:
    correlated = r is not None and abs(r) >= MOVED_CORRELATION and n >= MIN_BUCKETS
    shifted = shift is not None and abs(shift) >= SHIFT_SIGMA
    return correlated or shifted


class Watchman:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn(name="watchman")
    async def watchman(self, req: WatchmanInput) -> WatchmanResult:
        rows = await self._pool.fetch(
            _SQL, req.plc_id, req.metric, req.end, req.bucket_s, req.window_s
        )
        movements = [
            MetricMovement(
                metric=r["metric"],
                correlation=round(r["r"], 3) if r["r"] is not None else None,
                shift_sigma=round(r["shift"], 2) if r["shift"] is not None else None,
                buckets=r["n"],
                moved=_moved(r["r"], r["n"], r["shift"]),
            )
            for r in rows
        ]
        moved = [m for m in movements if m.moved]
        if not movements:
            summary = (
                f"no other metrics of {req.plc_id} have samples in the last {req.window_s:g} s"
            )
        elif not moved:
            summary = f"no other metric of {req.plc_id} moved with {req.metric}"
        else:
            parts = []
            for m in moved:
                r = f"r = {m.correlation:+.2f}" if m.correlation is not None else "r n/a"
                shift = f", {m.shift_sigma:+.1f}σ" if m.shift_sigma is not None else ""
                parts.append(f"{m.metric} ({r}{shift})")
            summary = f"moved with {req.metric} on {req.plc_id}: " + ", ".join(parts)
        return WatchmanResult(
            plc_id=req.plc_id,
            metric=req.metric,
            window_s=req.window_s,
            movements=movements,
            summary=summary,
        )
