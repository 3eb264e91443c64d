"""Streaming drift detection: a rolling time window per PLC·metric, O(1) per sample.

drift = (window mean − baseline mean) / baseline std. An alarm needs |drift| above the
threshold for at least the on-delay; it clears only below the hysteresis level, so a signal
hovering at the threshold raises one alarm, not a stream of them.

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

from factorylm.models.drift import DriftAlert
from factorylm.plant import Baseline

log = logging.getLogger(__name__)


@dataclass
class DriftConfig:
    window_s: float = 300.0
    threshold_sigma: float = 2.0
    clear_sigma: float = 1.5
    on_delay_s: float = 0.0
    min_samples: int = 3


@dataclass
class _Window:
    baseline: Baseline | None
    threshold: float
    points: deque[tuple[float, float]] = field(default_factory=deque)
    total: float = 0.0
    alarmed: bool = False
    above_since: float | None = None
    sigma: float = 0.0

    def add(self, t: float, value: float, window_s: float) -> None:
        self.points.append((t, value))
        self.total += value
        horizon = t - window_s
        while self.points and self.points[0][0] < horizon:
            self.total -= self.points.popleft()[1]

    @property
    def mean(self) -> float:
        return self.total / len(self.points)


AlarmHandler = Callable[[DriftAlert], None]


class DriftDetector:
    def __init__(
        self,
        config: DriftConfig,
        on_alarm: AlarmHandler,
        *,
        vendors: dict[str, str] | None = None,
        units: dict[tuple[str, str], str] | None = None,
    ) -> None:
        self.config = config
        self._on_alarm = on_alarm
        self._windows: dict[tuple[str, str], _Window] = {}
        self._vendors = vendors or {}
        self._units = units or {}
        self._warned_no_baseline: set[tuple[str, str]] = set()
        self.alarms_raised = 0

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
            window.baseline, window.threshold = baseline, limit

    def alarmed(self, plc_id: str, metric: str) -> bool:
        window = self._windows.get((plc_id, metric))
        return window is not None and window.alarmed

    def observe(self, plc_id: str, metric: str, t: float, value: float, when: datetime) -> None:
        """Feed one sample (t: monotonic seconds, when: its wall-clock timestamp)."""
        if not math.isfinite(value):
            return  # the collector rejects these; none may ever reach a window
        key = (plc_id, metric)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(None, self.config.threshold_sigma)
        window.add(t, value, self.config.window_s)
        base = window.baseline
        if base is None:
            if key not in self._warned_no_baseline:
                self._warned_no_baseline.add(key)
                log.info("%s/%s has no baseline yet: it cannot alarm", plc_id, metric)
            return
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
        self.alarms_raised += 1
        self._on_alarm(self._alert(plc_id, metric, window, when))

    def _alert(self, plc_id: str, metric: str, window: _Window, when: datetime) -> DriftAlert:
        base = window.baseline
        assert base is not None
        related = {
            other: round(w.sigma, 2)
            for (p, other), w in self._windows.items()
            if p == plc_id and other != metric and abs(w.sigma) >= self.config.clear_sigma
        }
        return DriftAlert(
            plc_id=plc_id,
            vendor=self._vendors.get(plc_id, "unknown"),
            metric=metric,
            unit=self._units.get((plc_id, metric), ""),
            sigma=round(window.sigma, 3),
            window_mean=window.mean,
            window_count=len(window.points),
            window_seconds=self.config.window_s,
            baseline_mean=base.mean,
            baseline_std=base.std,
            sample_time=when,
            detected_at=datetime.now(UTC),
            related=related,
        )
