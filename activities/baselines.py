"""Baseline computation, in SQL over the hypertable and its 1-minute rollups (rows never
travel to Python)."""

from __future__ import annotations

import math

import asyncpg
from temporalio import activity

from factorylm.channels import BASELINES_CHANNEL
from factorylm.models.baselines import (
    BaselineReport,
    BaselineRow,
    ComputeBaselinesInput,
    SkippedMetric,
)

# Per PLC·metric over the window: raw samples where they still exist, 1-minute rollups for the
# minutes whose raw samples were dropped (migration 0022), combined exactly.
#
# Where the split is: at `data_lifecycle.dropped_before` (the first minute still held raw), not
# at the rollup watermark. A rollup is final once past its lookback, but a sample can arrive
# later than that (a spool backfilled after a long outage) and is then only in `samples`; and
# a raw sample can be left out by its own time around a drift event where a rolled-up minute
# can only be left out whole. So the rollups are read only where nothing else is left, and with
# the default retention (14 days) a 48-hour window is all raw, as before.
#
# What rollups cannot give is taken from the raw part only, and is exact whenever raw samples
# cover the window: the percentiles (a minute keeps min and max, not its distribution) and φ,
# the lag-1 autocorrelation, which needs each sample beside the one polled before it — minute
# means are a different, far smoother series, whose φ would say the noise is nearly constant.
# A retention shorter than the window leaves at least its last day raw (the drop never goes
# under a day), many thousand pairs: φ and the percentiles of the recent samples.
#
# time_bucket keeps a sparse-but-long series from being dominated by one burst: the count of
# 1-minute buckets must also reach the minimum coverage.
_COMPUTE = """
WITH lifecycle AS (
    SELECT coalesce(max(dropped_before), '-infinity'::timestamptz) AS raw_from
    FROM data_lifecycle
), kept AS (
    SELECT plc_id, metric, time, value
    FROM samples s, lifecycle
    WHERE time >= greatest($1, lifecycle.raw_from) AND time < $2
      -- A NaN or ±inf makes avg and stddev NaN for the whole window. The collector rejects
      -- them, but rows written before it did (or by other tools) must not poison the
      -- baseline; in PostgreSQL NaN sorts above every number, so this leaves out all three.
      AND abs(value) < 'Infinity'::float8
      -- Normal is learned from normal operation: the minutes around a detected drift are
      -- left out, or every fault would widen the baseline until faults look normal.
      AND NOT EXISTS (
          SELECT 1 FROM drift_events e
          WHERE e.plc_id = s.plc_id AND e.metric = s.metric
            AND s.time BETWEEN e.detected_at - interval '5 minutes'
                           AND e.detected_at + interval '5 minutes')
), lagged AS (
    -- Each sample beside the one polled before it: their correlation is the noise's lag-1
    -- autocorrelation φ, which the detectors prewhiten with.
    SELECT plc_id, metric, time, value,
           lag(value) OVER (PARTITION BY plc_id, metric ORDER BY time) AS previous
    FROM kept
), raw AS (
    SELECT plc_id, metric, count(*) AS n, avg(value) AS mean,
           coalesce(var_pop(value), 0) * count(*) AS m2,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY value) AS p95,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY value) AS p99,
           count(DISTINCT time_bucket('1 minute', time)) AS minutes,
           corr(value, previous) AS phi
    FROM lagged
    GROUP BY plc_id, metric
), rolled AS (
    -- Whole minutes inside the window whose raw samples are gone. A minute with a non-finite
    -- sample has a NaN mean and is left out whole; one touching a drift event's ±5 minutes too.
    SELECT plc_id, metric, samples::bigint AS n, mean, m2
    FROM samples_1m r, lifecycle
    WHERE bucket >= $1 AND bucket + interval '1 minute' <= least($2, lifecycle.raw_from)
      AND abs(mean) < 'Infinity'::float8 AND m2 < 'Infinity'::float8
      AND NOT EXISTS (
          SELECT 1 FROM drift_events e
          WHERE e.plc_id = r.plc_id AND e.metric = r.metric
            AND r.bucket <= e.detected_at + interval '5 minutes'
            AND r.bucket + interval '1 minute' > e.detected_at - interval '5 minutes')
), parts AS (
    SELECT plc_id, metric, n, mean, m2, minutes FROM raw
    UNION ALL
    SELECT plc_id, metric, n, mean, m2, 1 FROM rolled
), combined AS (
    -- Chan et al.'s pairwise combination (factorylm/db/rollups.py): N = Σnᵢ, the mean
    -- Σnᵢ·meanᵢ/N, M2 = Σ(m2ᵢ + nᵢ·(meanᵢ − mean)²); the same figures the raw samples give.
    SELECT plc_id, metric, n, mean, m2, minutes,
           sum(n * mean) OVER w / sum(n) OVER w AS overall
    FROM parts
    WINDOW w AS (PARTITION BY plc_id, metric)
), stats AS (
    SELECT plc_id, metric, sum(n)::bigint AS n, min(overall) AS mean, sum(minutes) AS minutes,
           CASE WHEN sum(n) > 1
                THEN sqrt(sum(m2 + n * (mean - overall) ^ 2) / (sum(n) - 1))
           END AS std
    FROM combined
    GROUP BY plc_id, metric
)
SELECT plc_id, metric, stats.n, stats.mean, stats.std, raw.p95, raw.p99, raw.phi,
       stats.minutes
FROM stats LEFT JOIN raw USING (plc_id, metric)
ORDER BY plc_id, metric
"""

# φ is kept inside what the plant file's Baseline accepts: a signal so smooth that φ rounds
# to 1 is prewhitened as 0.99 (its residual is still far closer to independent than z).
PHI_LIMIT = 0.99


def usable_phi(value: float | None) -> float:
    """corr() is NULL for fewer than two pairs or no variation: then independent samples."""
    if value is None or not math.isfinite(value):
        return 0.0
    return max(-PHI_LIMIT, min(PHI_LIMIT, value))


_INSERT = """
INSERT INTO baselines (run_key, plc_id, metric, mean, std, p95, p99, sample_count,
                       window_start, window_end, phi)
SELECT $1, r.plc_id, r.metric, r.mean, r.std, r.p95, r.p99, r.n, $2, $3, r.phi
FROM unnest($4::text[], $5::text[], $6::float8[], $7::float8[], $8::float8[], $9::float8[],
            $10::bigint[], $11::float8[]) AS r(plc_id, metric, mean, std, p95, p99, n, phi)
ON CONFLICT (run_key, plc_id, metric) DO NOTHING
"""


class BaselineActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn(name="compute_baselines")
    async def compute_baselines(self, req: ComputeBaselinesInput) -> BaselineReport:
        start, end = req.window_start, req.window_end
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_COMPUTE, start, end)
            kept: list[BaselineRow] = []
            skipped: list[SkippedMetric] = []
            for r in rows:
                reason = None
                if r["n"] < req.min_samples:
                    reason = f"{r['n']} samples, fewer than {req.min_samples}"
                elif r["minutes"] < req.min_minutes:
                    reason = f"data in {r['minutes']} minutes of the window, fewer than {req.min_minutes}"
                elif not r["std"] or r["std"] <= 0:
                    reason = "no variation (std 0): a stuck or constant signal"
                elif r["p95"] is None:
                    # Only rollups left in the window (the PLC silent since the last drop):
                    # no percentiles or φ to learn from.
                    reason = "no raw samples left in the window, only 1-minute rollups"
                if reason:
                    skipped.append(
                        SkippedMetric(plc_id=r["plc_id"], metric=r["metric"], reason=reason)
                    )
                    continue
                kept.append(
                    BaselineRow(
                        plc_id=r["plc_id"],
                        metric=r["metric"],
                        mean=r["mean"],
                        std=r["std"],
                        p95=r["p95"],
                        p99=r["p99"],
                        sample_count=r["n"],
                        phi=usable_phi(r["phi"]),
                    )
                )
            async with conn.transaction():
                await conn.execute(
                    _INSERT,
                    req.run_key,
                    start,
                    end,
                    [k.plc_id for k in kept],
                    [k.metric for k in kept],
                    [k.mean for k in kept],
                    [k.std for k in kept],
                    [k.p95 for k in kept],
                    [k.p99 for k in kept],
                    [k.sample_count for k in kept],
                    [k.phi for k in kept],
                )
                # Running detectors reload at once instead of waiting for a poll.
                await conn.execute(f"NOTIFY {BASELINES_CHANNEL}")
        return BaselineReport(
            run_key=req.run_key, window_start=start, window_end=end, baselines=kept, skipped=skipped
        )
