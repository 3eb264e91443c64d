"""Watchman: which other metrics on the same machine moved with the drifting one.

Both figures come from TimescaleDB in one query: Pearson correlation over time_bucket'ed means
in the window, and each metric's shift against the preceding window of the same length; over
windows bucketed by whole minutes, from the 1-minute rollups where they reach.
"""

from __future__ import annotations

import asyncpg
from temporalio import activity

from factorylm.models.agents import MetricMovement, WatchmanInput, WatchmanResult

# |r| at least this over at least MIN_BUCKETS buckets, or a shift of SHIFT_SIGMA, is "moved".
MOVED_CORRELATION = 0.7
MIN_BUCKETS = 5
SHIFT_SIGMA = 2.0

# Over long windows the whole minutes already rolled up come from the 1-minute rollups
# (migration 0022): one row a minute instead of one a sample, and minutes whose raw samples were
# dropped are still there. That is exact only when a bucket is made of whole minutes, so only
# then ($6); a bucket mean is then Σn·mean/Σn of its minutes, and each window's mean and spread
# combine exactly (Chan et al.'s formula, as factorylm/db/rollups.py). The samples outside
# those minutes — a window's ragged ends and what is not rolled up yet — are read raw.
_SQL = """
WITH params AS (
    SELECT make_interval(secs => $4::float8) AS bucket, make_interval(secs => $5::float8) AS win,
           CASE WHEN $6::boolean
                THEN coalesce((SELECT max(rolled_up_to) FROM data_lifecycle), '-infinity')
                ELSE '-infinity'::timestamptz
           END AS watermark
),
windows AS (
    -- 0: the window; 1: the one of the same length before it, for the shift.
    -- The whole minutes inside (lo, hi]: from the first to start at or after lo (a sample
    -- exactly at a whole-minute lo is in its minute's rollup, so it counts then) to the last
    -- to end by hi, and not past the watermark.
    SELECT w, lo, hi,
           date_trunc('minute', lo + interval '1 minute' - interval '1 microsecond') AS r_lo,
           least(date_trunc('minute', hi), watermark) AS r_hi
    FROM (SELECT w, $3::timestamptz - (w + 1) * win AS lo, $3::timestamptz - w * win AS hi,
                 watermark
          FROM params, (VALUES (0), (1)) AS v(w)) AS x
),
parts AS (
    -- Per window, bucket and metric: (count, mean, sum of squared deviations).
    SELECT k.w, time_bucket((SELECT bucket FROM params), s.time) AS t, s.metric,
           count(*) AS n, avg(s.value) AS mean, coalesce(var_pop(s.value), 0) * count(*) AS m2
    FROM samples s JOIN windows k ON s.time > k.lo AND s.time <= k.hi
    WHERE s.plc_id = $1 AND NOT (s.time >= k.r_lo AND s.time < k.r_hi)
    GROUP BY 1, 2, 3
    UNION ALL
    SELECT k.w, time_bucket((SELECT bucket FROM params), r.bucket), r.metric,
           r.samples, r.mean, r.m2
    FROM samples_1m r JOIN windows k ON r.bucket >= k.r_lo AND r.bucket < k.r_hi
    WHERE r.plc_id = $1
),
buckets AS (
    SELECT t, metric, sum(n * mean) / sum(n) AS v FROM parts WHERE w = 0 GROUP BY 1, 2
),
target AS (SELECT t, v FROM buckets WHERE metric = $2),
paired AS (
    SELECT b.metric, corr(target.v, b.v) AS r, count(*) AS n
    FROM buckets b JOIN target USING (t)
    WHERE b.metric <> $2
    GROUP BY b.metric
),
overall AS (
    SELECT w, metric, n, mean, m2, sum(n * mean) OVER k / sum(n) OVER k AS m
    FROM parts
    WINDOW k AS (PARTITION BY w, metric)
),
stats AS (
    SELECT w, metric, min(m) AS m,
           CASE WHEN sum(n) > 1 THEN sqrt(sum(m2 + n * (mean - m) ^ 2) / (sum(n) - 1)) END AS sd
    FROM overall
    GROUP BY w, metric
),
now_stats AS (SELECT metric, m FROM stats WHERE w = 0),
before_stats AS (SELECT metric, m, sd FROM stats WHERE w = 1)
SELECT paired.metric, paired.r, paired.n,
       (now_stats.m - before_stats.m) / nullif(before_stats.sd, 0) AS shift
FROM paired
LEFT JOIN now_stats USING (metric)
LEFT JOIN before_stats USING (metric)
ORDER BY abs(coalesce(paired.r, 0)) DESC, paired.metric
"""


def reads_rollups(bucket_s: float) -> bool:
    """Buckets of whole minutes: their means are exactly those of their rolled-up minutes."""
    return bucket_s >= 60 and bucket_s % 60 == 0


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
            _SQL,
            req.plc_id,
            req.metric,
            req.end,
            req.bucket_s,
            req.window_s,
            reads_rollups(req.bucket_s),
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
