"""The detectors beside the windowed mean (CUSUM, EWMA, flat line, hard limits): the CUSUM's
run lengths against the published figures, each detector's alarm and clear, their plant-file
parameters, the shipped defaults, and prewhitening with the baseline's autocorrelation."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from factorylm.models.drift import DriftAlert
from factorylm.plant import Baseline, Metric, Plant, PlantConfigError, load_plant
from factorylm.settings import PROJECT_ROOT
from ingest.drift import CusumDetector, DriftConfig, DriftDetector

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def run_length(rng: np.random.Generator, shift: float, k: float = 0.5, h: float = 5.0) -> int:
    """Samples until the two-sided CUSUM alarms on N(shift, 1) noise, counting the alarm."""
    cusum = CusumDetector(k, h)
    n = 0
    while True:
        for z in (rng.standard_normal(512) + shift).tolist():
            n += 1
            if cusum.update(z):
                return n


def test_cusum_run_lengths_match_the_published_arl_for_k_half_h_five() -> None:
    # Published ARLs of the two-sided tabular CUSUM, k = 0.5, h = 5, unit-variance normal data
    # (Montgomery, Introduction to Statistical Quality Control, table of CUSUM ARLs):
    # 465 in control, 10.4 for a 1σ shift.
    rng = np.random.default_rng(20261201)
    in_control = [run_length(rng, 0.0) for _ in range(4000)]
    shifted = [run_length(rng, 1.0) for _ in range(10000)]
    arl0, arl1 = statistics.fmean(in_control), statistics.fmean(shifted)
    se0 = statistics.stdev(in_control) / math.sqrt(len(in_control))
    se1 = statistics.stdev(shifted) / math.sqrt(len(shifted))
    # In control the run length is close to geometric (sd ≈ mean ≈ 460), so 4000 runs give a
    # standard error of ≈ 7 samples, 1.6 %: ±7 % is ≈ 4.5 standard errors, so a correct chart
    # essentially never fails it, while h = 4 (ARL0 ≈ 168) fails it by far. (Measured with
    # this seed: 462.8 ± 7.2.)
    assert se0 < 0.02 * 465, f"too few runs: standard error {se0:.1f}"
    assert abs(arl0 - 465) <= 0.07 * 465, f"ARL0 {arl0:.1f} ± {se0:.1f}"
    # Shifted by 1σ: sd ≈ 5.5, so 10 000 runs give a standard error of ≈ 0.055, 0.5 %; ±3 % is
    # ≈ 5.5 standard errors, and h = 4 (≈ 8.5) or k = 0.25 (≈ 7.4) fails it. (Measured:
    # 10.35 ± 0.055.) The runs cost ≈ 1.9 M samples, under a second.
    assert se1 < 0.01 * 10.4, f"too few runs: standard error {se1:.2f}"
    assert abs(arl1 - 10.4) <= 0.03 * 10.4, f"ARL1 {arl1:.2f} ± {se1:.2f}"


def detector(metric: dict[str, Any], **config: float) -> tuple[DriftDetector, list[DriftAlert]]:
    alerts: list[DriftAlert] = []
    d = DriftDetector(DriftConfig(**config), alerts.append, units={("p1", "vib"): "mm/s"})  # type: ignore[arg-type]
    m = Metric.model_validate({"name": "vib", "register": 0, **metric})
    d.set_baseline("p1", "vib", m.baseline, m.drift_threshold_sigma)
    d.configure("p1", m)
    return d, alerts


# Only the detector a test names: the shipped defaults (all on) are tested on their own.
BASE = {"baseline": {"mean": 10.0, "std": 1.0}, "cusum": None, "ewma": None, "stuck": None}


def feed(d: DriftDetector, values: list[float], start: float = 0.0, step: float = 1.0) -> float:
    t = start
    for v in values:
        d.observe("p1", "vib", t, v, NOW)
        t += step
    return t


def noise(n: int, seed: int, mean: float = 10.0) -> list[float]:
    values: list[float] = (np.random.default_rng(seed).standard_normal(n) + mean).tolist()
    return values


def by(alerts: list[DriftAlert], name: str) -> list[DriftAlert]:
    return [a for a in alerts if a.detection and a.detection.detector == name]


def test_a_6_sigma_step_alarms_through_the_cusum_on_its_first_sample_with_a_300_s_window() -> None:
    d, alerts = detector({**BASE, "cusum": {"k": 0.5, "h": 5}}, window_s=300)
    t = feed(d, noise(300, seed=1))
    assert alerts == []
    feed(d, [16.0], start=t)
    (alert,) = alerts
    assert alert.detection is not None and alert.detection.detector == "cusum"
    assert "upper CUSUM" in alert.detection.reason and "h = 5" in alert.detection.reason
    assert "cusum alarm" in alert.describe()


def test_the_cusum_alarm_estimates_the_shift_from_the_samples_since_its_sum_left_zero() -> None:
    d, alerts = detector({**BASE, "cusum": {"k": 0.5, "h": 5}}, window_s=300)
    t = feed(d, [10.0] * 10)  # exactly on the mean: both sums stay at 0
    feed(d, [13.0] * 3, start=t)  # S = 3 × (3 − 0.5) = 7.5 > 5 after 3 samples
    (alert,) = alerts
    assert alert.sigma == 3.0  # k + S / N = 0.5 + 7.5 / 3


def test_with_the_detectors_turned_off_in_the_plant_file_only_the_window_alarms() -> None:
    d, alerts = detector(BASE, window_s=300)
    t = feed(d, noise(300, seed=1))
    late = 0
    while not alerts:
        t = feed(d, [16.0], start=t)
        late += 1
    feed(d, [16.0] * 200, start=t)
    assert [a.detection.detector for a in alerts if a.detection] == ["window"]
    # The 5-minute mean needs a third of its window full of the 6σ fault: ~100 s at 1 Hz.
    assert 90 <= late <= 110
    assert 2.0 < alerts[0].sigma < 2.2


def test_a_hard_limit_raises_even_while_a_drift_alarm_of_the_metric_stands() -> None:
    d, alerts = detector({**BASE, "cusum": {"k": 0.5, "h": 5}, "max": 18.0}, window_s=5)
    t = feed(d, [10.0] * 10)
    t = feed(d, [16.0] * 3, start=t)  # the CUSUM's alarm; the window's joins it
    feed(d, [19.0], start=t)  # past the hard max: a condition of its own
    assert [a.detection.detector for a in alerts if a.detection] == ["cusum", "limit"]
    assert d.alarms_merged == 1


def test_cusum_alarms_once_for_a_sustained_shift_and_again_after_it_cleared() -> None:
    d, alerts = detector({**BASE, "cusum": {"k": 0.5, "h": 5}}, window_s=1)
    t = feed(d, [10.0] * 10)
    t = feed(d, [14.0] * 500, start=t)  # a long fault: one alarm, not one per h/(δ−k) samples
    assert len(by(alerts, "cusum")) == 1
    assert d.alarmed("p1", "vib")
    t = feed(d, [10.0] * 12, start=t)  # the clamped sum drains in ~h/k samples: cleared
    assert not d.alarmed("p1", "vib")
    feed(d, [6.0] * 3, start=t)
    cusum = by(alerts, "cusum")
    assert len(cusum) == 2 and cusum[1].sigma < 0
    assert cusum[1].detection is not None and "lower CUSUM" in cusum[1].detection.reason


def test_ewma_sees_a_slow_ramp_before_the_5_minute_window_does() -> None:
    d, alerts = detector({**BASE, "ewma": {"lambda": 0.05, "L": 3}}, window_s=300)
    w, window_alerts = detector(BASE, window_s=300)  # the window alone, same samples
    t = feed(d, noise(600, seed=2))
    feed(w, noise(600, seed=2))
    assert alerts == [] and window_alerts == []
    # 0 → 4σ over an hour at 1 Hz, with the same noise on top.
    ramp = [v + 4.0 * i / 3600 for i, v in enumerate(noise(3600, seed=3))]
    first: dict[str, int] = {}
    for i, v in enumerate(ramp):
        for name, det, got in (("ewma", d, alerts), ("window", w, window_alerts)):
            feed(det, [v], start=t + i)
            if got and name not in first:
                first[name] = i
    assert first["ewma"] < first["window"]
    # The window crossed later too, and joined the EWMA's standing alarm instead of raising
    # one. (Early in the ramp this textbook EWMA clears and alarms again: that is the EWMA's.)
    assert {a.detection.detector for a in alerts if a.detection} == {"ewma"}
    assert alerts[0].detection is not None and "λ = 0.05" in alerts[0].detection.reason
    assert d.alarms_merged >= 1


def test_a_flat_line_alarms_after_the_configured_time_and_clears_when_it_moves() -> None:
    d, alerts = detector({**BASE, "stuck": {"after_s": 30}}, window_s=1)
    t = feed(d, noise(100, seed=4))
    assert alerts == []
    t = feed(d, [10.3] * 30, start=t)  # flat for 29 s: not yet
    assert by(alerts, "stuck") == []
    t = feed(d, [10.3] * 2, start=t)
    (stuck,) = by(alerts, "stuck")
    assert stuck.detection is not None and "flat at 10.3 for 30.0 s" in stuck.detection.reason
    t = feed(d, [10.3] * 100, start=t)
    assert len(by(alerts, "stuck")) == 1  # latched while it stays flat
    t = feed(d, [10.9], start=t)
    assert not d.alarmed("p1", "vib")
    feed(d, [10.9] * 31, start=t)
    assert len(by(alerts, "stuck")) == 2


def test_a_flat_line_within_the_tolerance_still_counts_as_stuck() -> None:
    d, alerts = detector({**BASE, "stuck": {"after_s": 10, "tolerance_sigma": 0.05}}, window_s=1)
    feed(d, [10.0, 10.02, 10.04, 10.01] * 5)
    assert len(by(alerts, "stuck")) == 1
    d2, alerts2 = detector({**BASE, "stuck": {"after_s": 10, "tolerance_sigma": 0.01}}, window_s=1)
    feed(d2, [10.0, 10.02, 10.04, 10.01] * 5)
    assert by(alerts2, "stuck") == []


def test_a_hard_limit_fires_on_the_first_sample_past_it_even_without_a_baseline() -> None:
    d, alerts = detector({"max": 90.0, "min": 5.0}, window_s=300)
    feed(d, [60.0, 89.9, 90.0])
    assert alerts == []  # the limit itself is allowed
    feed(d, [90.1, 95.0, 99.0], start=3)
    (limit,) = alerts
    assert limit.detection is not None and limit.detection.detector == "limit"
    assert limit.detection.reason == "90.1 mm/s above max 90 (hard limit from the plant file)"
    assert limit.baseline_std == 0.0  # no baseline yet: said so, not invented
    feed(d, [80.0, 4.0], start=6)
    assert len(alerts) == 2 and alerts[1].detection is not None
    assert "below min 5" in alerts[1].detection.reason


def test_non_finite_samples_never_reach_any_detector() -> None:
    d, alerts = detector(
        {**BASE, "cusum": {}, "ewma": {}, "stuck": {"after_s": 5}, "max": 20.0}, window_s=1
    )
    t = feed(d, noise(20, seed=5))
    t = feed(d, [math.nan, math.inf, -math.inf] * 20, start=t)
    assert alerts == []  # +inf is not "above max", and 60 s of NaN is not a flat line
    feed(d, [16.0] * 3, start=t)  # the statistics are still finite: a real step still alarms
    # z = 6 is past the EWMA's per-sample limit (λ = 1, L = 5.5) at once: it raises the
    # metric's alarm; the CUSUM (k = 0.75, h = 10) fires on the second sample and joins it.
    (alert,) = alerts
    assert alert.detection is not None and alert.detection.detector == "ewma"
    assert d.alarms_merged == 1 and math.isfinite(alert.sigma)


def test_a_new_baseline_restarts_the_sigma_statistics() -> None:
    d, alerts = detector({**BASE, "cusum": {"k": 0.5, "h": 5}}, window_s=1)
    feed(d, [12.0] * 3)  # CUSUM at 4.5: one more such sample would alarm
    d.set_baseline("p1", "vib", Baseline(mean=12.0, std=1.0))  # 12 is now normal
    feed(d, [12.0] * 50, start=3)
    assert alerts == []


def _errors(tmp_path: Path, **metric: Any) -> str:
    raw = yaml.safe_load((PROJECT_ROOT / "config" / "plant.yaml").read_text())
    plc = next(p for p in raw["plcs"] if p["id"] == "press-1")
    vib = next(m for m in plc["metrics"] if m["name"] == "vibration")
    vib.update(metric)
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PlantConfigError) as err:
        load_plant(path)
    return str(err.value)


@pytest.mark.parametrize(
    ("metric", "field", "words"),
    [
        ({"cusum": {"h": -1}}, "cusum.h", "greater than 0"),
        ({"cusum": {"k": -0.5}}, "cusum.k", "greater than or equal to 0"),
        ({"ewma": {"lambda": 0}}, "ewma.lambda", "greater than 0"),
        ({"ewma": {"lambda": 1.5}}, "ewma.lambda", "less than or equal to 1"),
        ({"ewma": {"L": -3}}, "ewma.L", "greater than 0"),
        ({"min": 5, "max": 5}, "", "min (5.0) must be below max (5.0)"),
        ({"stuck": {"after_s": 0.05}}, "", "stuck.after_s: 0.05 s is shorter than"),
        ({"baseline": {"mean": 2, "std": 0.3, "phi": 1.0}}, "baseline.phi",
         "less than or equal to 0.99"),
        ({"baseline": {"mean": 2, "std": 0.3, "phi": -1.5}}, "baseline.phi",
         "greater than or equal to -0.99"),
        ({"stuck": {"after_s": 60, "tolerance_sigma": -1}}, "stuck.tolerance_sigma",
         "greater than or equal to 0"),
    ],
    ids=["negative-h", "negative-k", "lambda-0", "lambda-above-1", "negative-L", "min-eq-max",
         "stuck-under-poll", "phi-1", "phi-below-minus-1", "negative-tolerance"],
)  # fmt: skip
def test_impossible_detector_parameters_name_the_plc_metric_and_field(
    tmp_path: Path, metric: dict[str, Any], field: str, words: str
) -> None:
    message = _errors(tmp_path, **metric)
    if field:
        assert f"plcs[press-1].metrics[vibration].{field}: " in message
    elif "stuck" in words:  # checked against the PLC's poll interval (press-1: 100 ms)
        assert f"plcs[press-1]: Value error, metrics[vibration].{words}" in message
        assert "poll_interval_ms (100 ms)" in message
    else:
        assert "plcs[press-1].metrics[vibration]: " in message
    assert words in message


def test_the_shipped_defaults_turn_on_cusum_ewma_and_flat_line_and_null_turns_one_off() -> None:
    plant = load_plant(PROJECT_ROOT / "config" / "plant.yaml")
    for plc in plant.plcs:
        for m in plc.metrics:
            # The figures in docs/drift.md were measured with exactly these.
            assert m.cusum is not None and (m.cusum.k, m.cusum.h) == (0.75, 10.0)
            assert m.ewma is not None and (m.ewma.lam, m.ewma.width) == (1.0, 5.5)
            assert m.stuck is not None and (m.stuck.after_s, m.stuck.tolerance_sigma) == (120, 0)
    m = Metric.model_validate({"name": "x", "register": 0, "cusum": None, "stuck": None})
    assert (m.cusum, m.stuck) == (None, None) and m.ewma is not None
    # Written without parameters a detector takes the shipped values, not the textbook ones.
    m = Metric.model_validate({"name": "x", "register": 0, "cusum": {}, "ewma": {"L": 4}})
    assert m.cusum is not None and (m.cusum.k, m.cusum.h) == (0.75, 10.0)
    assert m.ewma is not None and (m.ewma.lam, m.ewma.width) == (1.0, 4.0)


def test_a_slowly_polled_plc_gets_a_default_flat_line_time_of_ten_polls() -> None:
    plc = {"id": "slow", "vendor": "x", "protocol": "modbus_tcp", "poll_interval_ms": 30_000}
    plant = Plant.model_validate({"plcs": [{**plc, "metrics": [
        {"name": "a", "register": 0},
        {"name": "b", "register": 1, "stuck": {"after_s": 45}},
    ]}]})  # fmt: skip
    a, b = plant.plcs[0].metrics
    assert a.stuck is not None and a.stuck.after_s == 300.0  # 10 × 30 s, not 120 s
    assert b.stuck is not None and b.stuck.after_s == 45.0  # what the file says


def ar1_noise(n: int, phi: float, seed: int, mean: float = 10.0) -> list[float]:
    """Unit-variance AR(1) noise around mean, drawn here by its definition (not the simulator's)."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n) * math.sqrt(1 - phi * phi)
    x, out = rng.standard_normal(), []
    for v in e.tolist():
        x = phi * x + v
        out.append(mean + x)
    return out


def test_prewhitening_with_the_baselines_phi_keeps_the_cusum_quiet_on_correlated_noise() -> None:
    values = ar1_noise(20_000, 0.9, seed=5)
    cusum = {"cusum": {"k": 0.75, "h": 10}}
    raw, raw_alerts = detector({**BASE, **cusum}, window_s=300)
    feed(raw, values)
    whitened, white_alerts = detector(
        {**BASE, **cusum, "baseline": {"mean": 10.0, "std": 1.0, "phi": 0.9}}, window_s=300
    )
    feed(whitened, values)
    # Sums of φ = 0.9 noise wander √19 ≈ 4.4 times as far: the raw chart alarms again and again
    # in 20 000 samples; on independent noise this chart's run length is millions of samples.
    assert len([a for a in raw_alerts if a.detection and a.detection.detector == "cusum"]) >= 5
    assert white_alerts == []


def test_a_prewhitened_step_alarms_at_once_and_the_alarm_reports_the_signals_own_shift() -> None:
    # φ = 0.9: a 3σ step is one prewhitened jump of 3 / √(1 − 0.81) = 6.9σ, past L = 5.5.
    d, alerts = detector(
        {**BASE, "ewma": {"lambda": 1, "L": 5.5}, "baseline": {"mean": 10, "std": 1, "phi": 0.9}},
        window_s=300,
    )
    t = feed(d, [10.0] * 50)
    feed(d, [13.0], start=t)
    (alert,) = alerts
    assert alert.detection is not None and alert.detection.detector == "ewma"
    assert "prewhitened, φ = 0.90" in alert.detection.reason
    assert alert.sigma == 3.0  # the sample's own 3σ, not the 6.9σ of the prewhitened jump
    # The CUSUM's estimate is the mean level over the samples since its sum left 0.
    c, c_alerts = detector(
        {**BASE, "cusum": {"k": 0.5, "h": 5}, "baseline": {"mean": 10, "std": 1, "phi": 0.5}},
        window_s=300,
    )
    t = feed(c, [10.0] * 50)
    feed(c, [14.0] * 3, start=t)  # r: 4/0.866 = 4.62, then 2/0.866 = 2.31: S = 4.12 + 1.81 > 5
    (alert,) = c_alerts
    assert alert.sigma == 4.0


def test_a_plc_polled_less_often_than_the_drift_window_is_long_is_refused_by_name() -> None:
    plant = Plant.model_validate({"plcs": [
        {"id": "fast", "vendor": "x", "protocol": "modbus_tcp", "poll_interval_ms": 250,
         "metrics": [{"name": "a", "register": 0}]},
        {"id": "slow", "vendor": "x", "protocol": "modbus_tcp", "poll_interval_ms": 5000,
         "metrics": [{"name": "a", "register": 0}]},
    ]})  # fmt: skip
    DriftDetector(DriftConfig(window_s=5.0), lambda a: None).configure_plant(plant)  # equal: ok
    with pytest.raises(PlantConfigError) as refused:
        DriftDetector(DriftConfig(window_s=1.0), lambda a: None).configure_plant(plant)
    assert str(refused.value).startswith("plcs[slow].poll_interval_ms: 5000 ms is longer than")
    assert "FACTORYLM_DRIFT_WINDOW_S = 1 s" in str(refused.value)
