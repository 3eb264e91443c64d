"""Baseline computation, in SQL over the hypertable (rows never travel to Python)."""

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

# Per PLC·metric over the window. time_bucket keeps a sparse-but-long series from being
# dominated by one burst: the count of 1-minute buckets must also reach the minimum coverage.
_COMPUTE = """
WITH kept AS (
    SELECT plc_id, metric, time, value
    FROM samples s
    WHERE time >= $1 AND time < $2
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
), stats AS (
    SELECT plc_id, metric,
           avg(value) AS mean, stddev_samp(value) AS std,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY value) AS p95,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY value) AS p99,
           count(*) AS n,
           count(DISTINCT time_bucket('1 minute', time)) AS minutes,
           corr(value, previous) AS phi
    FROM lagged
    GROUP BY plc_id, metric
)
SELECT * FROM stats ORDER BY plc_id, metric
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
