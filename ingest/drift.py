"""Streaming drift detection per PLC·metric, O(1) per sample.

Always on: a rolling time window, drift = (window mean − baseline mean) / baseline std. An
alarm needs |drift| above the threshold for at least the on-delay; it clears only below the
hysteresis level, so a signal hovering at the threshold raises one alarm, not a stream of them.

Per metric, when the plant file turns them on (see docs/drift.md): a two-sided CUSUM for
abrupt shifts, an EWMA for ramps and small persistent shifts, a flat-line (stuck) detector,
and hard min/max limits. Each detector latches: it alarms once, then stays quiet until its own
clear condition. A metric raises one alarm per episode: the first drift detector (window, CUSUM,
EWMA, flat line) that fires raises it, the others latch silently until every one of them has
cleared, so a fault is one alarm however many detectors see it (ISA-18.2: one alarm per
condition; the alarm journal counts raises for floods and chattering). A hard limit is its own
condition and always raises.

CUSUM and EWMA see the *prewhitened* sample when the baseline has a lag-1 autocorrelation φ:
r = (z_t − φ·z_{t−1}) / √(1 − φ²), which is independent unit-variance noise again if the noise
is AR(1). Fed the raw z of noise with φ = 0.9, a CUSUM tuned for one false alarm a week would
alarm every few minutes, because sums of correlated samples wander (1+φ)/(1−φ) = 19 times
as far. A step of δσ shows in r as one jump of δ/√(1−φ²) and then a shift of δ·√((1−φ)/(1+φ)).

Only finite numbers enter a window and only finite baselines with a positive std are used:
one NaN or ±inf in a running sum would make the metric's drift NaN for good (it would alarm
once with σ = NaN, never clear, and never alarm for a real drift again).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from factorylm.models.drift import Detection, DriftAlert
from factorylm.models.forecasts import Forecast
from factorylm.plant import Baseline, Metric, Plant, PlantConfigError
from ingest.forecast import Trend

log = logging.getLogger(__name__)


@dataclass
class DriftConfig:
    window_s: float = 300.0
    threshold_sigma: float = 2.0
    clear_sigma: float = 1.5
    on_delay_s: float = 0.0
    min_samples: int = 3
    # A forecast reaching a threshold within this many seconds raises a (low-severity) alarm
    # of its own before any detector fires; 0: forecasts only ride along with alarms.
    forecast_horizon_s: float = 0.0


class CusumDetector:
    """Two-sided tabular CUSUM on standardised samples z = (x − mean) / σ.

    hi = max(0, hi + z − k) and lo = max(0, lo − z − k); an alarm when either exceeds h. Before
    the first alarm this is exactly the textbook chart whose run lengths the unit test checks.
    After an alarm the alarmed sum is clamped at h, so once the fault is gone it drains back
    to 0 within about h / k samples, and it clears there; unclamped, an hour's 6σ fault would
    leave a sum that takes hours to drain.
    """

    __slots__ = ("alarmed", "h", "hi", "k", "lo", "n_hi", "n_lo", "x_hi", "x_lo")

    def __init__(self, k: float, h: float) -> None:
        self.k, self.h = k, h
        self.reset()

    def reset(self) -> None:
        self.hi = self.lo = 0.0
        self.n_hi = self.n_lo = 0  # samples since each sum was last 0: for the shift estimate
        self.x_hi = self.x_lo = 0.0  # the sum of the level over those samples
        self.alarmed = 0  # +1 / -1 while latched on that side

    def update(self, z: float, level: float | None = None) -> int:
        """Feed one sample; +1 or -1 when an alarm starts on that side, else 0. `level` is the
        sample's own standardised value when z is prewhitened (for the shift estimate)."""
        x = z if level is None else level
        hi = self.hi + z - self.k
        lo = self.lo - z - self.k
        self.hi = hi if hi > 0.0 else 0.0
        self.lo = lo if lo > 0.0 else 0.0
        if self.hi > 0:
            self.n_hi, self.x_hi = self.n_hi + 1, self.x_hi + x
        else:
            self.n_hi, self.x_hi = 0, 0.0
        if self.lo > 0:
            self.n_lo, self.x_lo = self.n_lo + 1, self.x_lo + x
        else:
            self.n_lo, self.x_lo = 0, 0.0
        if self.alarmed:
            if self.alarmed > 0:
                self.hi = min(self.hi, self.h)
                if self.hi == 0:
                    self.alarmed = 0
            else:
                self.lo = min(self.lo, self.h)
                if self.lo == 0:
                    self.alarmed = 0
            return 0
        if self.hi > self.h:
            self.alarmed = 1
        elif self.lo > self.h:
            self.alarmed = -1
        return self.alarmed

    def shift(self) -> float:
        """The shift since the sum last left 0, in σ: the mean level over those N samples, which
        for an unwhitened z is the textbook k + S / N."""
        if self.alarmed < 0 or (self.alarmed == 0 and self.lo > self.hi):
            return self.x_lo / max(self.n_lo, 1)
        return self.x_hi / max(self.n_hi, 1)


class EwmaDetector:
    """EWMA of standardised samples, e = λz + (1 − λ)e, started at 0 (the baseline mean).

    Its limit is L times the EWMA's exact standard deviation, σ_e² = λ/(2−λ)·(1 − (1−λ)^{2n}),
    which is narrow for the first samples and widens to the asymptote, so the chart is as
    sensitive right after a start or a baseline change as it is later. It clears when |e| is
    back under `clear` of the limit.
    """

    __slots__ = ("_limit", "alarmed", "clear", "decay", "e", "lam", "level", "q", "width")

    def __init__(self, lam: float, width: float, clear: float) -> None:
        self.lam, self.width, self.clear = lam, width, clear
        self.q = (1 - lam) ** 2
        self.reset()

    def reset(self) -> None:
        self.e = 0.0
        self.level = 0.0  # the same EWMA of the unwhitened z: the alarm's σ
        self.decay = 1.0  # (1 − λ)^{2n}, kept as a running product: O(1)
        self._limit = self._exact_limit()
        self.alarmed = False

    def _exact_limit(self) -> float:
        return self.width * math.sqrt(self.lam / (2 - self.lam) * (1 - self.decay))

    def limit(self) -> float:
        return self._limit

    def update(self, z: float, level: float | None = None) -> bool:
        """Feed one sample; True when an alarm starts. `level`: the unwhitened z, if z is."""
        self.e = self.lam * z + (1 - self.lam) * self.e
        self.level = self.lam * (z if level is None else level) + (1 - self.lam) * self.level
        # Once (1 − λ)^{2n} is below half an ulp of 1, 1 − decay is exactly 1.0 and the limit
        # is its asymptote: computed once, not a square root per sample.
        if self.decay > 1e-17:
            self.decay *= self.q
            self._limit = self._exact_limit()
        limit = self._limit
        if self.alarmed:
            if abs(self.e) < self.clear * limit:
                self.alarmed = False
            return False
        if abs(self.e) > limit:
            self.alarmed = True
            return True
        return False


class StuckDetector:
    """A flat line: every sample for after_s seconds within tolerance·σ of each other.

    O(1): the run's running min and max; a sample that widens them past the tolerance starts
    a new run at itself. Clears when the value moves again.
    """

    __slots__ = ("after_s", "alarmed", "hi", "lo", "since", "tolerance")

    def __init__(self, after_s: float, tolerance_sigma: float) -> None:
        self.after_s, self.tolerance = after_s, tolerance_sigma
        self.reset()

    def reset(self) -> None:
        self.since: float | None = None
        self.lo = self.hi = 0.0
        self.alarmed = False

    def update(self, t: float, value: float, std: float) -> bool:
        if self.since is None:
            self.since, self.lo, self.hi = t, value, value
            return False
        lo, hi = min(self.lo, value), max(self.hi, value)
        if hi - lo > self.tolerance * std:
            self.since, self.lo, self.hi = t, value, value
            self.alarmed = False
            return False
        self.lo, self.hi = lo, hi
        if not self.alarmed and t - self.since >= self.after_s:
            self.alarmed = True
            return True
        return False

    def flat_for(self, t: float) -> float:
        return 0.0 if self.since is None else t - self.since


@dataclass
class _Window:
    baseline: Baseline | None
    threshold: float
    points: deque[tuple[float, float]] = field(default_factory=deque)
    total: float = 0.0
    alarmed: bool = False
    above_since: float | None = None
    sigma: float = 0.0
    cusum: CusumDetector | None = None
    ewma: EwmaDetector | None = None
    stuck: StuckDetector | None = None
    low: float | None = None
    high: float | None = None
    limit_alarmed: bool = False
    last_z: float | None = None  # the previous standardised sample, for prewhitening
    # 1-minute means and the time-to-threshold forecast over them (ingest/forecast.py).
    trend: Trend = field(default_factory=Trend)
    forecast: Forecast | None = None
    episode: bool = False  # a drift alarm of this metric stands: later detectors stay silent
    forecast_alarmed: bool = False

    def add(self, t: float, value: float, window_s: float) -> None:
        self.points.append((t, value))
        self.total += value
        horizon = t - window_s
        while self.points and self.points[0][0] < horizon:
            self.total -= self.points.popleft()[1]

    @property
    def mean(self) -> float:
        return self.total / len(self.points)

    def reset_statistics(self) -> None:
        """CUSUM, EWMA and flat-line state are in σ of the old baseline: start them again."""
        for detector in (self.cusum, self.ewma, self.stuck):
            if detector is not None:
                detector.reset()
        self.last_z = None

    def whiten(self, z: float, phi: float) -> float:
        """z prewhitened with the baseline's φ (z itself for independent samples)."""
        last, self.last_z = self.last_z, z
        if phi == 0.0 or last is None:
            return z
        return (z - phi * last) / math.sqrt(1.0 - phi * phi)

    @property
    def drift_alarmed(self) -> bool:
        return (
            self.alarmed
            or bool(self.cusum and self.cusum.alarmed)
            or bool(self.ewma and self.ewma.alarmed)
            or bool(self.stuck and self.stuck.alarmed)
        )

    @property
    def any_alarmed(self) -> bool:
        return self.limit_alarmed or self.forecast_alarmed or self.drift_alarmed


AlarmHandler = Callable[[DriftAlert], None]


def _whitened(base: Baseline) -> str:
    """What an alarm's reason says of prewhitening (built only when an alarm is raised)."""
    return f"; prewhitened, φ = {base.phi:.2f}" if base.phi else ""


class DriftDetector:
    def __init__(
        self,
        config: DriftConfig,
        on_alarm: AlarmHandler,
        *,
        vendors: dict[str, str] | None = None,
        units: dict[tuple[str, str], str] | None = None,
        sites: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self._on_alarm = on_alarm
        self._windows: dict[tuple[str, str], _Window] = {}
        self._vendors = vendors or {}
        self._units = units or {}
        self._sites = sites or {}
        self._warned_no_baseline: set[tuple[str, str]] = set()
        self.alarms_raised = 0
        self.alarms_merged = 0  # detectors that fired while their metric's alarm stood

    def _window(self, key: tuple[str, str]) -> _Window:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(None, self.config.threshold_sigma)
        return window

    def configure(self, plc_id: str, metric: Metric) -> None:
        """Turn on the detectors the plant file sets for this metric (the window is always on)."""
        window = self._window((plc_id, metric.name))
        window.cusum = CusumDetector(metric.cusum.k, metric.cusum.h) if metric.cusum else None
        clear = self.config.clear_sigma / self.config.threshold_sigma
        window.ewma = (
            EwmaDetector(metric.ewma.lam, metric.ewma.width, clear) if metric.ewma else None
        )
        window.stuck = (
            StuckDetector(metric.stuck.after_s, metric.stuck.tolerance_sigma)
            if metric.stuck
            else None
        )
        window.low, window.high = metric.min, metric.max

    def configure_plant(self, plant: Plant) -> None:
        """Every metric's detectors. A PLC polled less often than the window is long would
        have at most one sample in it: its window could never alarm, so that is refused."""
        window_ms = self.config.window_s * 1000
        for plc in plant.plcs:
            if plc.poll_interval_ms > window_ms:
                raise PlantConfigError(
                    f"plcs[{plc.id}].poll_interval_ms: {plc.poll_interval_ms} ms is longer than "
                    f"the drift window (FACTORYLM_DRIFT_WINDOW_S = {self.config.window_s:g} s): "
                    "the window would hold one sample at most; poll faster or widen the window"
                )
            for metric in plc.metrics:
                self.configure(plc.id, metric)

    def set_baseline(
        self, plc_id: str, metric: str, baseline: Baseline | None, threshold: float | None = None
    ) -> None:
        key = (plc_id, metric)
        window = self._windows.get(key)
        if baseline is not None and not (
            math.isfinite(baseline.mean) and math.isfinite(baseline.std) and baseline.std > 0
        ):
            log.warning(
                "%s/%s: baseline %s/%s is not usable; keeping the current one",
                plc_id,
                metric,
                baseline.mean,
                baseline.std,
            )
            if window is not None:
                return
            baseline = None
        # A reload without a threshold keeps the metric's own override.
        limit = threshold or (window.threshold if window else self.config.threshold_sigma)
        if window is None:
            self._windows[key] = _Window(baseline=baseline, threshold=limit)
        else:
            if window.baseline != baseline:
                window.reset_statistics()
            window.baseline, window.threshold = baseline, limit

    def forecasts(self) -> list[Forecast]:
        """Every metric's current forecast (those trending toward a threshold)."""
        return [w.forecast for w in self._windows.values() if w.forecast is not None]

    def alarmed(self, plc_id: str, metric: str) -> bool:
        window = self._windows.get((plc_id, metric))
        return window is not None and window.any_alarmed

    def observe(self, plc_id: str, metric: str, t: float, value: float, when: datetime) -> None:
        """Feed one sample (t: monotonic seconds, when: its wall-clock timestamp)."""
        if not math.isfinite(value):
            return  # the collector rejects these; none may ever reach a window or detector
        key = (plc_id, metric)
        window = self._window(key)
        window.add(t, value, self.config.window_s)
        # Hard limits need no baseline: a limit is a limit from the first sample.
        if window.low is not None or window.high is not None:
            self._check_limits(plc_id, metric, window, value, when)
        base = window.baseline
        if window.trend.add(t, value) and base is not None:  # once a minute
            window.forecast = window.trend.forecast(
                plc_id, metric, base, window.low, window.high,
                self._units.get(key, ""), when,
            )  # fmt: skip
            self._check_forecast(plc_id, metric, window, base, when)
        if base is None:
            if key not in self._warned_no_baseline:
                self._warned_no_baseline.add(key)
                log.info("%s/%s has no baseline yet: it cannot alarm on drift", plc_id, metric)
            return
        z = (value - base.mean) / base.std
        r = window.whiten(z, base.phi)
        if window.cusum is not None and window.cusum.update(r, z):
            c = window.cusum
            side, total = ("upper", c.hi) if c.alarmed > 0 else ("lower", c.lo)
            shift = c.shift()
            self._raise(
                plc_id, metric, window, when, shift, "cusum",
                f"{side} CUSUM {total:.2f} > h = {c.h:g} (k = {c.k:g}{_whitened(base)}); "
                f"estimated shift {shift:+.1f}σ",
            )  # fmt: skip
        if window.ewma is not None and window.ewma.update(r, z):
            e = window.ewma
            self._raise(
                plc_id, metric, window, when, e.level, "ewma",
                f"EWMA {e.e:+.2f}σ beyond ±{e.limit():.2f}σ (λ = {e.lam:g}, L = {e.width:g}"
                f"{_whitened(base)})",
            )  # fmt: skip
        if window.stuck is not None and window.stuck.update(t, value, base.std):
            st = window.stuck
            self._raise(
                plc_id, metric, window, when, z, "stuck",
                f"flat at {value:.6g} for {st.flat_for(t):.1f} s (≥ {st.after_s:g} s, "
                f"tolerance {st.tolerance:g}σ) although its baseline σ is {base.std:.3g}",
            )  # fmt: skip
        self._check_window(plc_id, metric, window, t, when)
        if window.episode and not window.drift_alarmed:
            window.episode = False  # every detector has cleared: the next fault alarms again

    def _check_forecast(
        self, plc_id: str, metric: str, window: _Window, base: Baseline, when: datetime
    ) -> None:
        """A trend that will reach a threshold within the horizon (the whole 95 % range of its
        arrival) is an alarm of its own (like a
        hard limit, it neither opens nor joins the metric's drift alarm, which would then
        swallow the real one). It clears when the forecast is gone or beyond twice the
        horizon, so an estimate wavering at the horizon does not chatter."""
        horizon = self.config.forecast_horizon_s
        f = window.forecast
        if horizon <= 0:
            return
        if window.forecast_alarmed:
            if f is None or f.eta_s > 2 * horizon:
                window.forecast_alarmed = False
            return
        # Even the slow end of the slope's interval must arrive within the horizon: a trend the
        # noise could have drawn (a 10-minute wander of autocorrelated noise) stays a forecast.
        if f is None or f.eta_high_s is None or f.eta_high_s > horizon or window.episode:
            return
        window.forecast_alarmed = True
        self._raise(
            plc_id, metric, window, when, (f.level - base.mean) / base.std, "forecast",
            f"{f.describe()}, within the {horizon / 3600:g} h forecast horizon",
        )  # fmt: skip

    def _check_limits(
        self, plc_id: str, metric: str, window: _Window, value: float, when: datetime
    ) -> None:
        if window.low is None and window.high is None:
            return
        outside = ""
        if window.high is not None and value > window.high:
            outside = f"above max {window.high:g}"
        elif window.low is not None and value < window.low:
            outside = f"below min {window.low:g}"
        if not outside:
            window.limit_alarmed = False
            return
        if window.limit_alarmed:
            return
        window.limit_alarmed = True
        base = window.baseline
        sigma = (value - base.mean) / base.std if base else 0.0
        unit = self._units.get((plc_id, metric), "")
        self._raise(
            plc_id, metric, window, when, sigma, "limit",
            f"{value:.6g}{unit and ' '}{unit} {outside} (hard limit from the plant file)",
        )  # fmt: skip

    def _check_window(
        self, plc_id: str, metric: str, window: _Window, t: float, when: datetime
    ) -> None:
        base = window.baseline
        assert base is not None
        if len(window.points) < self.config.min_samples:
            return
        sigma = (window.mean - base.mean) / base.std
        window.sigma = sigma
        magnitude = abs(sigma)
        if window.alarmed:
            if magnitude < self.config.clear_sigma:
                window.alarmed = False
                window.above_since = None
                log.info("%s/%s back to normal (%.2fσ)", plc_id, metric, sigma)
            return
        if magnitude <= window.threshold:
            window.above_since = None
            return
        if window.above_since is None:
            window.above_since = t
        if t - window.above_since < self.config.on_delay_s:
            return
        window.alarmed = True
        self._raise(
            plc_id, metric, window, when, sigma, "window",
            f"{self.config.window_s:g} s mean {sigma:+.2f}σ beyond ±{window.threshold:g}σ",
        )  # fmt: skip

    def _raise(
        self,
        plc_id: str,
        metric: str,
        window: _Window,
        when: datetime,
        sigma: float,
        detector: str,
        reason: str,
    ) -> None:
        if detector not in ("limit", "forecast"):
            if window.episode:
                self.alarms_merged += 1
                log.info("%s/%s: %s also fired (%s); the standing alarm covers it",
                         plc_id, metric, detector, reason)  # fmt: skip
                return
            window.episode = True
        self.alarms_raised += 1
        log.info("%s/%s: %s alarm: %s", plc_id, metric, detector, reason)
        self._on_alarm(
            self._alert(plc_id, metric, window, when, sigma, Detection.model_validate(
                {"detector": detector, "reason": reason}
            ))
        )  # fmt: skip

    def _alert(
        self,
        plc_id: str,
        metric: str,
        window: _Window,
        when: datetime,
        sigma: float,
        detection: Detection,
    ) -> DriftAlert:
        base = window.baseline
        related = {
            other: round(w.sigma, 2)
            for (p, other), w in self._windows.items()
            if p == plc_id and other != metric and abs(w.sigma) >= self.config.clear_sigma
        }
        return DriftAlert(
            plc_id=plc_id,
            vendor=self._vendors.get(plc_id, "unknown"),
            metric=metric,
            site=self._sites.get(plc_id, ""),
            unit=self._units.get((plc_id, metric), ""),
            sigma=round(sigma, 3),
            window_mean=window.mean,
            window_count=len(window.points),
            window_seconds=self.config.window_s,
            # A hard limit can fire before any baseline exists: then both read 0.
            baseline_mean=base.mean if base else 0.0,
            baseline_std=base.std if base else 0.0,
            sample_time=when,
            detected_at=datetime.now(UTC),
            related=related,
            detection=detection,
            forecast=window.forecast,
        )
