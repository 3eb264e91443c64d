"""Time-to-threshold forecasts per PLC·metric, O(1) amortised per sample.

Samples are summed into the current 1-minute bucket; a closed minute's mean goes into a ring of
the last RING_MINUTES means, and once a minute a Theil–Sen line (the median of all pairwise
slopes: a few outliers or a spike cannot tilt it) is fitted over the recent means and extended
to the nearest threshold it points at. ≤ 120 points is ≤ 7 140 slopes, a millisecond in numpy.

Which stretch to fit: a ramp that began 30 minutes ago sits on 90 flat minutes in a 2-hour
ring, and a line through both reads about half the ramp's slope. So the longest trailing window
(120, 60, 30, 15 or 10 minutes) is used whose older and newer halves agree on the slope: one
slope explains it all. A forecast needs that interval to exclude 0 (a real
trend), a threshold ahead in the trend's direction, and an arrival within MAX_HORIZON_S.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np

from factorylm.models.forecasts import Forecast
from factorylm.plant import Baseline

log = logging.getLogger(__name__)

BUCKET_S = 60.0
RING_MINUTES = 120
WINDOWS = (120, 60, 30, 15, 10)
MIN_POINTS = 10
# The critical severity (factorylm.models.drift.Severity): the level a forecast aims at.
FORECAST_SIGMA = 4.0
MAX_HORIZON_S = 14 * 86400.0
_Z95 = 1.96


@functools.cache
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """Index pairs i < j of n points, and the ranks of the median and of Sen's 95 % bounds
    among their n(n−1)/2 slopes (cached: n is at most RING_MINUTES)."""
    i, j = np.triu_indices(n, k=1)
    pairs = len(i)
    c = _Z95 * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    lo = int(max(0, math.floor((pairs - c) / 2)))
    hi = int(min(pairs - 1, math.ceil((pairs + c) / 2)))
    return i, j, lo, pairs // 2, hi


def _median(a: np.ndarray) -> float:
    """np.median without its NaN checks (the ring holds finite means only): a third of the
    forecast's time went there."""
    k = len(a) // 2
    if len(a) % 2:
        return float(np.partition(a, k)[k])
    part = np.partition(a, [k - 1, k])
    return float((part[k - 1] + part[k]) / 2)


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Slope, intercept and Sen's 95 % interval of the slope (low, high)."""
    i, j, lo, mid, hi = _pairs(len(x))
    slopes = (y[j] - y[i]) / (x[j] - x[i])
    ranks = [lo, mid, hi] if len(slopes) % 2 else [lo, mid - 1, mid, hi]
    part = np.partition(slopes, ranks)  # the order statistics needed, not a full sort
    slope = float(part[mid]) if len(slopes) % 2 else float((part[mid - 1] + part[mid]) / 2)
    intercept = _median(y - slope * x)
    return slope, intercept, float(part[lo]), float(part[hi])


def _one_slope(x: np.ndarray, y: np.ndarray, slope: float, intercept: float) -> bool:
    """Do the older and the newer half of the points have the same slope, within three
    standard errors of their difference? The error is the line's robust residual spread
    (1.4826 · MAD) through the usual slope variance σ² · 12 / (h³ − h) per half."""
    half = len(x) // 2
    spread = 1.4826 * _median(np.abs(y - (slope * x + intercept)))
    if spread == 0.0:
        return True  # a perfect line
    older, _, _, _ = theil_sen(x[:half], y[:half])
    newer, _, _, _ = theil_sen(x[-half:], y[-half:])
    step = float(x[1] - x[0])
    se = spread * math.sqrt(12 / (half**3 - half)) / step
    return abs(newer - older) <= 3 * math.sqrt(2) * se


class Trend:
    """The ring of 1-minute means of one PLC·metric and its latest forecast."""

    __slots__ = ("bucket", "count", "means", "total")

    def __init__(self) -> None:
        self.means: deque[tuple[float, float]] = deque(maxlen=RING_MINUTES)
        self.bucket: float | None = None
        self.total = 0.0
        self.count = 0

    def add(self, t: float, value: float) -> bool:
        """Feed one sample (t: monotonic seconds); True when it closed a minute."""
        bucket = t - t % BUCKET_S
        closed = False
        if self.bucket is not None and bucket != self.bucket:
            if self.count:
                # A gap of several minutes leaves them out; the fit uses real times.
                self.means.append((self.bucket + BUCKET_S / 2, self.total / self.count))
            self.total, self.count, closed = 0.0, 0, True
        self.bucket = bucket
        self.total += value
        self.count += 1
        return closed

    def reset(self) -> None:
        self.means.clear()
        self.bucket, self.total, self.count = None, 0.0, 0

    def fit(self) -> tuple[float, float, float, float, int, float] | None:
        """(slope/s, level now, slope low, slope high, minutes, time now) or None."""
        if len(self.means) < MIN_POINTS:
            return None
        data = np.array(self.means)
        now = float(data[-1, 0])
        chosen = None
        for size in WINDOWS:
            if size > len(data):
                continue
            x, y = data[-size:, 0] - now, data[-size:, 1]
            slope, intercept, lo, hi = theil_sen(x, y)
            chosen = (slope, intercept, lo, hi, size)
            if _one_slope(x, y, slope, intercept):
                break
        if chosen is None:
            return None
        slope, intercept, lo, hi, size = chosen
        return slope, intercept, lo, hi, size, now

    def forecast(
        self,
        plc_id: str,
        metric: str,
        base: Baseline,
        low: float | None,
        high: float | None,
        unit: str,
        when: datetime,
    ) -> Forecast | None:
        fitted = self.fit()
        if fitted is None:
            return None
        slope, level, lo, hi, size, _ = fitted
        if lo <= 0 <= hi:
            return None  # no trend the data can tell from noise
        up = slope > 0
        targets: list[tuple[str, float]] = [
            ("sigma", base.mean + (FORECAST_SIGMA if up else -FORECAST_SIGMA) * base.std)
        ]
        if up and high is not None:
            targets.append(("max", high))
        if not up and low is not None:
            targets.append(("min", low))
        ahead = [(kind, v) for kind, v in targets if (v > level if up else v < level)]
        if not ahead:
            return None  # already past every threshold: the alarms speak for it
        kind, threshold = min(ahead, key=lambda kv: abs(kv[1] - level))
        distance = threshold - level
        eta = distance / slope
        if eta > MAX_HORIZON_S:
            return None
        fast, slow = (hi, lo) if up else (lo, hi)
        return Forecast.model_validate(
            {
                "plc_id": plc_id,
                "metric": metric,
                "unit": unit,
                "target": kind,
                "threshold": threshold,
                "threshold_sigma": round((threshold - base.mean) / base.std, 2),
                "level": level,
                "slope_per_hour": slope * 3600,
                "eta_s": eta,
                "eta_low_s": distance / fast,
                # The slow end of the interval may be flat or turned: then no latest time.
                "eta_high_s": distance / slow if slow * slope > 0 else None,
                "minutes": size,
                "computed_at": when,
            }
        )


PUBLISH_EVERY_S = 60.0
STALE_S = 300.0

_UPSERT = """
INSERT INTO forecasts (plc_id, metric, forecast, updated_at)
SELECT r.plc_id, r.metric, r.forecast::jsonb, now()
FROM unnest($1::text[], $2::text[], $3::text[]) AS r(plc_id, metric, forecast)
ON CONFLICT (plc_id, metric) DO UPDATE SET forecast = EXCLUDED.forecast, updated_at = now()
"""

# This ingest's metrics that no longer trend toward a threshold: their row says so (NULL).
_GONE = """
UPDATE forecasts SET forecast = NULL, updated_at = now()
WHERE plc_id = ANY($1::text[]) AND forecast IS NOT NULL
  AND (plc_id, metric) NOT IN (SELECT * FROM unnest($2::text[], $3::text[]))
"""


class ForecastPublisher:
    """Once a minute, the detector's current forecasts into the `forecasts` table, where
    GET /forecasts reads them (the API is another process). A database hiccup costs one
    round, never the ingest."""

    def __init__(
        self,
        dsn: str,
        source: Callable[[], list[Forecast]],
        plc_ids: list[str],
        *,
        every_s: float = PUBLISH_EVERY_S,
    ) -> None:
        self._dsn, self._source, self._plcs, self._every = dsn, source, plc_ids, every_s
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="forecast-publisher")

    async def _run(self) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while True:
                await asyncio.sleep(self._every)
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(self._dsn)
                    await self.publish(conn)
                except (OSError, asyncpg.PostgresError) as exc:
                    log.warning("could not publish forecasts (%s); next round in %gs",
                                exc, self._every)  # fmt: skip
                    conn = None
        finally:
            if conn is not None:
                await conn.close()

    async def publish(self, conn: asyncpg.Connection) -> None:
        # A metric whose samples stopped (its PLC went silent) keeps its last forecast in the
        # detector; after STALE_S without a new minute it is no longer published as current.
        fresh = datetime.now(UTC) - timedelta(seconds=STALE_S)
        forecasts = [f for f in self._source() if f.plc_id in self._plcs and f.computed_at >= fresh]
        plcs = [f.plc_id for f in forecasts]
        metrics = [f.metric for f in forecasts]
        async with conn.transaction():
            await conn.execute(_UPSERT, plcs, metrics, [f.model_dump_json() for f in forecasts])
            await conn.execute(_GONE, self._plcs, plcs, metrics)
        self.published += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
