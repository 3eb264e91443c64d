from __future__ import annotations

from datetime import UTC, datetime

from factorylm.models.drift import DriftAlert, Severity
from factorylm.plant import Baseline
from ingest.drift import DriftConfig, DriftDetector

NOW = datetime(2026, 11, 20, tzinfo=UTC)


def detector(**kw: float) -> tuple[DriftDetector, list[DriftAlert]]:
    alerts: list[DriftAlert] = []
    config = DriftConfig(**{"window_s": 1.0, "min_samples": 1, **kw})  # type: ignore[arg-type]
    d = DriftDetector(config, alerts.append, vendors={"p1": "siemens_s7"})
    d.set_baseline("p1", "vib", Baseline(mean=10.0, std=1.0))
    return d, alerts


def feed(d: DriftDetector, values: list[float], start: float = 0.0, step: float = 0.1) -> float:
    t = start
    for v in values:
        d.observe("p1", "vib", t, v, NOW)
        t += step
    return t


def test_alarm_fires_on_first_crossing_without_on_delay() -> None:
    d, alerts = detector()
    feed(d, [10.0] * 10 + [15.0] * 20)
    assert len(alerts) == 1
    alert = alerts[0]
    assert 2 < alert.sigma < 3 and alert.vendor == "siemens_s7"
    assert alert.workflow_id == "drift-p1-vib"
    assert alert.severity is Severity.WARNING


def test_on_delay_lets_the_window_fill_with_the_fault() -> None:
    d, alerts = detector(on_delay_s=1.0)
    feed(d, [10.0] * 10 + [15.0] * 20)
    assert len(alerts) == 1
    assert alerts[0].sigma == 5.0
    assert alerts[0].severity is Severity.CRITICAL


def test_hovering_signal_does_not_chatter() -> None:
    d, alerts = detector()
    # Oscillate between 1.6σ and 2.4σ: above threshold, never below the 1.5σ clear level.
    feed(d, [12.4 if i % 2 else 11.6 for i in range(400)], step=0.5)
    assert len(alerts) == 1


def test_clears_below_hysteresis_then_alarms_again() -> None:
    d, alerts = detector()
    t = feed(d, [13.0] * 20)
    t = feed(d, [10.0] * 20, start=t)
    feed(d, [13.0] * 20, start=t)
    assert len(alerts) == 2


def test_on_delay_suppresses_short_spikes() -> None:
    d, alerts = detector(on_delay_s=2.0, window_s=0.25)
    t = feed(d, [10.0] * 10)
    t = feed(d, [14.0] * 10, start=t)  # 1 s above threshold: shorter than the on-delay
    t = feed(d, [10.0] * 10, start=t)
    assert alerts == []
    feed(d, [14.0] * 30, start=t)  # 3 s above
    assert len(alerts) == 1


def test_metric_without_baseline_never_alarms() -> None:
    d, alerts = detector()
    for i in range(100):
        d.observe("p1", "temp", i * 0.1, 1000.0 * i, NOW)
    assert alerts == []


def test_window_evicts_old_samples() -> None:
    d, alerts = detector(window_s=1.0)
    t = feed(d, [100.0] * 5)
    assert len(alerts) == 1
    # 3 s later the spike has left the window: one normal sample clears, the next fault alarms.
    t = feed(d, [10.0], start=t + 3.0)
    feed(d, [13.0] * 20, start=t)
    assert len(alerts) == 2


def test_related_metrics_on_same_plc_are_reported() -> None:
    d, alerts = detector()
    d.set_baseline("p1", "temp", Baseline(mean=50.0, std=2.0))
    for i in range(20):
        d.observe("p1", "temp", i * 0.1, 56.0, NOW)  # 3σ
    alerts.clear()
    feed(d, [13.0] * 20)
    assert alerts and alerts[-1].related == {"temp": 3.0}
