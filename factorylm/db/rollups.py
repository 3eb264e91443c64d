"""Reading the 1-minute rollups (migration 0022) for long windows.

Each rollup row keeps (samples, mean, m2) for its minute; minutes combine exactly (Chan et al.'s
pairwise update): N = Σnᵢ, mean = Σnᵢ·meanᵢ / N, M2 = Σ(m2ᵢ + nᵢ·(meanᵢ − mean)²). So a baseline
read from a week of rollups is the one raw samples give, at one row per minute instead of one
per sample.
"""

from __future__ import annotations

# Mean, sample standard deviation and count per PLC·metric over [$1, $2), from rollups.
BASELINE_FROM_ROLLUPS = """
WITH minutes AS (
    SELECT plc_id, metric, samples, mean, m2,
           sum(samples * mean) OVER w / sum(samples) OVER w AS overall
    FROM samples_1m
    WHERE bucket >= $1 AND bucket < $2
    WINDOW w AS (PARTITION BY plc_id, metric)
)
SELECT plc_id, metric, sum(samples)::bigint AS n, min(overall) AS mean,
       CASE WHEN sum(samples) > 1
            THEN sqrt(sum(m2 + samples * (mean - overall) ^ 2) / (sum(samples) - 1))
       END AS std
FROM minutes
GROUP BY plc_id, metric
"""

# The same figures from raw samples: the anchor the rollups are checked and measured against.
BASELINE_FROM_RAW = """
SELECT plc_id, metric, count(*) AS n, avg(value) AS mean, stddev_samp(value) AS std
FROM samples
WHERE time >= $1 AND time < $2
GROUP BY plc_id, metric
"""
