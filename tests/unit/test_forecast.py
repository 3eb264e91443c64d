"""Time-to-threshold forecasts: Theil–Sen over 1-minute means, within ±25 % for linear ramps
once half the distance to the threshold is covered, robust to a spike, silent on noise, and
carried by the drift alarm's text."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from dev.simulator.signals import Fault, FaultKind, Signal, series
from factorylm.models.drift import DriftAlert
from factorylm.plant import Baseline, Metric
from ingest.drift import DriftConfig, DriftDetector
from ingest.forecast import Trend, theil_sen

NOW = datetime(2026, 12, 1, tzinfo=UTC)
BASE = Baseline(mean=2.1, std=0.3)


def feed(trend: Trend, values: np.ndarray, dt: float = 1.0) -> None:
    for i, v in enumerate(values.tolist()):
        trend.add(i * dt, v)


def test_theil_sen_ignores_a_few_wild_points_that_tilt_least_squares() -> None:
    x = np.arange(30.0)
    y = 2.0 * x + 1.0
    y[[3, 17, 25]] = [400.0, -300.0, 500.0]
    slope, intercept, lo, hi = theil_sen(x, y)
    assert slope == pytest.approx(2.0, abs=1e-9) and intercept == pytest.approx(1.0, abs=1e-9)
    assert lo <= 2.0 <= hi
    assert abs(np.polyfit(x, y, 1)[0] - 2.0) > 0.2  # least squares is tilted by 14 %


@pytest.mark.parametrize("ramp_h", [1.0, 2.0, 6.0])
@pytest.mark.parametrize("seed", range(6))
def test_a_linear_ramp_is_forecast_within_25_percent_once_half_the_distance_is_covered(
    ramp_h: float, seed: int
) -> None:
    # The simulator's model with AR(1) noise (φ = 0.5 at 1 s); no daily cycle, whose own
    # slope over hours would be part of the trend. The ramp reaches 4σ after ramp_h hours.
    signal = Signal(mean=BASE.mean, std=BASE.std, phi=0.5, daily_amplitude=0.0)
    start = 1800.0  # half an hour of normal operation before it
    ramp_s = ramp_h * 3600
    half = start + ramp_s / 2  # 2σ of the 4σ: half the distance
    values = series(
        signal, int(half), 1.0, np.random.default_rng(seed),
        fault=Fault(FaultKind.RAMP, 4.0, started=start, ramp_seconds=ramp_s),
    )  # fmt: skip
    trend = Trend()
    feed(trend, values)
    forecast = trend.forecast("press-1", "vibration", BASE, None, None, "mm/s", NOW)
    assert forecast is not None and forecast.target == "sigma" and forecast.threshold_sigma == 4
    truth = ramp_s / 2  # seconds from the half-way point to 4σ
    # The fit's "now" is the middle of the last full minute, at most 90 s before the last sample.
    assert abs(forecast.eta_s - truth) <= 0.25 * truth + 90, (forecast.eta_s, truth)
    assert forecast.eta_low_s <= forecast.eta_s
    assert forecast.eta_high_s is None or forecast.eta_s <= forecast.eta_high_s


def test_normal_noise_and_a_flat_signal_give_no_forecast() -> None:
    signal = Signal(mean=BASE.mean, std=BASE.std, phi=0.5, daily_amplitude=0.0)
    trend = Trend()
    feed(trend, series(signal, 3 * 3600, 1.0, np.random.default_rng(3)))
    assert trend.forecast("p", "m", BASE, None, None, "", NOW) is None
    flat = Trend()
    feed(flat, np.full(3600, 2.1))
    assert flat.forecast("p", "m", BASE, None, None, "", NOW) is None


def test_a_hard_limit_nearer_than_4_sigma_is_the_forecasts_target() -> None:
    # 0.01 mm/s per minute upward from 2.1: the max 2.5 comes before 4σ (3.3).
    values = 2.1 + 0.01 * np.arange(1800) / 60
    trend = Trend()
    feed(trend, values)
    forecast = trend.forecast("press-1", "vibration", BASE, None, 2.5, "mm/s", NOW)
    assert forecast is not None and forecast.target == "max" and forecast.threshold == 2.5
    # At minute 28.5 (the middle of the last closed minute) the line reads 2.385: 0.115 to go.
    assert forecast.eta_s == pytest.approx(0.115 / 0.01 * 60, rel=0.02)
    assert "vibration on press-1 will reach its hard max 2.5 (2.5 mm/s) in ~12 min" in (
        forecast.describe()
    )
    # Falling toward a min: the min is the target, whatever the max.
    down = Trend()
    feed(down, 2.1 - 0.01 * np.arange(1800) / 60)
    low = down.forecast("press-1", "vibration", BASE, 1.5, 2.5, "mm/s", NOW)
    assert low is not None and low.target == "min" and low.slope_per_hour == pytest.approx(-0.6)


def test_the_drift_alarm_carries_the_forecast_and_says_it() -> None:
    alerts: list[DriftAlert] = []
    d = DriftDetector(DriftConfig(window_s=300.0, on_delay_s=0.0), alerts.append,
                      units={("press-1", "vibration"): "mm/s"})  # fmt: skip
    metric = Metric.model_validate(  # the window alone: it alarms late enough to have a trend
        {"name": "vibration", "register": 2, "cusum": None, "ewma": None, "stuck": None}
    )
    d.configure("press-1", metric)
    d.set_baseline("press-1", "vibration", BASE)
    # Noise-free 0.1σ per minute: the window mean crosses 2σ after ~22 minutes, with 20 and
    # more 1-minute means in the ring.
    for i in range(3600):
        d.observe("press-1", "vibration", float(i), 2.1 + 0.03 * i / 60, NOW)
        if alerts:
            break
    alert = alerts[0]
    assert alert.forecast is not None and alert.forecast.target == "sigma"
    assert alert.forecast.slope_per_hour == pytest.approx(0.03 * 60, rel=0.01)
    assert "; trend: vibration on press-1 will reach 4σ (3.3 mm/s) in ~" in alert.describe()
    assert d.forecasts() == [d.forecasts()[0]] and d.forecasts()[0].metric == "vibration"


def ramp_detector(horizon_s: float) -> tuple[DriftDetector, list[DriftAlert]]:
    alerts: list[DriftAlert] = []
    d = DriftDetector(
        DriftConfig(window_s=300.0, on_delay_s=60.0, forecast_horizon_s=horizon_s), alerts.append
    )
    # The window alone beside the forecast: on a noise-free ramp the CUSUM (k = 0.75) would
    # alarm at 0.8σ already, long before either.
    metric = {"name": "vibration", "register": 2, "cusum": None, "ewma": None, "stuck": None}
    d.configure("press-1", Metric.model_validate(metric))
    d.set_baseline("press-1", "vibration", BASE)
    return d, alerts


def test_a_forecast_in_the_horizon_alarms_before_the_detectors_and_does_not_swallow_them() -> None:
    # 0 → 4σ over 6 hours (0.0033 mm/s a minute), noise-free: 2σ after 3 hours.
    d, alerts = ramp_detector(horizon_s=4 * 3600)
    for i in range(4 * 3600):
        d.observe("press-1", "vibration", float(i), 2.1 + 1.2 * i / (6 * 3600), NOW)
    first, *rest = alerts
    assert first.detection is not None and first.detection.detector == "forecast"
    assert "will reach 4σ (3.3) in ~" in first.detection.reason
    assert first.severity.value == "warning"  # the level is still near the baseline
    # 4 h before 4σ, i.e. 2 h in (the ring needs its first 10 minutes): within a few minutes.
    assert first.forecast is not None and abs(first.forecast.eta_s - 4 * 3600) < 15 * 60
    # The forecast alarm neither opened nor joined the drift alarm: the window still raised.
    assert [a.detection.detector for a in rest if a.detection] == ["window"]


def test_without_a_horizon_a_forecast_never_alarms_on_its_own() -> None:
    d, alerts = ramp_detector(horizon_s=0.0)
    for i in range(2 * 3600):
        d.observe("press-1", "vibration", float(i), 2.1 + 1.2 * i / (6 * 3600), NOW)
    assert alerts == [] and d.forecasts() and d.forecasts()[0].eta_s < 5 * 3600
