"""`factorylm bench detection`: detection delay and false alarms on a labelled corpus.

The corpus is drawn with the simulator's signal model (dev/simulator/signals.py: AR(1) noise,
a daily cycle, the register's resolution) for SERIES metrics that differ in their noise's
autocorrelation φ. Each series has a baseline estimated the way the baseline workflow does it
(mean, sample std and lag-1 autocorrelation over 48 h of its own normal samples), one week of
normal operation (every alarm in it is a false alarm), and fault episodes with known start
times: 30 minutes of normal operation (alarms there count as false too), then a step of 1–8σ,
a ramp to 4σ over 15 min, 1 h or 4 h, a stuck sensor or a dropout. Sizes are in the baseline
σ the detector uses.

The REAL detector (ingest/drift.py DriftDetector) is fed every sample at the production poll
interval (the plant file's default poll_interval_ms), offline: no Temporal, no database.
Each configuration prints one JSON line; `seed_rule` (a 5-minute mean against the baseline,
alarm beyond 2σ: what the plan started with) is the anchor of every line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from dev.simulator.signals import Fault, FaultKind, Signal, series
from factorylm.models.drift import DriftAlert
from factorylm.plant import Baseline, Cusum, Ewma, Metric, Plc, Stuck
from factorylm.settings import Settings
from ingest.drift import DriftConfig, DriftDetector

POLL_S = Plc.model_fields["poll_interval_ms"].default / 1000
PHIS = (0.0, 0.3, 0.6, 0.8, 0.9, 0.95)  # one series each
QUANTUM = 0.01  # vibration's register: u16, scale 0.01
WARMUP_S = 1800.0
NORMAL_S = 7 * 86400.0
TRAIN_S = 48 * 3600.0
STEP_SIZES = (1, 2, 3, 4, 6, 8)


@dataclass(frozen=True)
class Spec:
    name: str
    kind: FaultKind
    size: float  # in baseline σ
    ramp_s: float  # time to reach `size` (0: at once)
    after_s: float  # how long the episode runs past the fault's start
    reps: int  # per series


SPECS = (
    *(Spec(f"step_{s}", FaultKind.STEP, s, 1e-9, 900, 10) for s in STEP_SIZES),
    Spec("ramp_15min", FaultKind.RAMP, 4, 900, 900 + 600, 4),
    Spec("ramp_1h", FaultKind.RAMP, 4, 3600, 3600 + 600, 6),
    Spec("ramp_4h", FaultKind.RAMP, 4, 14400, 14400 + 600, 2),
    Spec("stuck", FaultKind.STUCK, 0, 0, 900, 6),
    Spec("dropout", FaultKind.DROPOUT, 0, 0, 900, 6),
)


def _shipped_drift_config() -> DriftConfig:
    """The window settings a plant gets by default (the model's defaults, not this shell's
    environment)."""
    f = Settings.model_fields
    return DriftConfig(
        window_s=f["drift_window_s"].default,
        threshold_sigma=f["drift_threshold_sigma"].default,
        clear_sigma=f["drift_clear_sigma"].default,
        on_delay_s=f["drift_on_delay_s"].default,
        forecast_horizon_s=f["drift_forecast_horizon_s"].default,
    )


_SHIPPED_METRIC = Metric.model_validate({"name": "vibration", "register": 2, "scale": QUANTUM})


@dataclass(frozen=True)
class Config:
    name: str
    metric: Metric
    use_phi: bool = True
    drift: DriftConfig = field(default_factory=_shipped_drift_config)


def configs() -> list[Config]:
    bare = _SHIPPED_METRIC.model_copy(update={"cusum": None, "ewma": None, "stuck": None})
    textbook = bare.model_copy(update={"cusum": Cusum(k=0.5, h=5), "ewma": Ewma(lam=0.2, width=3)})
    stuck = _SHIPPED_METRIC.stuck or Stuck(after_s=120)
    return [
        # The plan's rule as it shipped: the window alone, no on-delay.
        Config(
            "seed_rule", bare, use_phi=False, drift=replace(_shipped_drift_config(), on_delay_s=0.0)
        ),
        Config("default", _SHIPPED_METRIC),
        Config("default_without_phi", _SHIPPED_METRIC, use_phi=False),
        Config("textbook_cusum_ewma", textbook.model_copy(update={"stuck": stuck}), use_phi=False),
        *(
            Config(
                f"default_with_forecast_alarm_{hours}h",
                _SHIPPED_METRIC,
                drift=replace(_shipped_drift_config(), forecast_horizon_s=hours * 3600.0),
            )
            for hours in (4, 24)
        ),
    ]


@dataclass
class Episode:
    spec: Spec | None  # None: the normal week
    values: list[float]
    fault_at: float  # seconds from the first sample; inf for the normal week


@dataclass
class Series:
    phi: float
    baseline: Baseline
    std: float  # the baseline σ in the signal's unit, for sizing faults
    episodes: list[Episode]


def _estimate(x: np.ndarray) -> Baseline:
    phi = float(np.corrcoef(x[1:], x[:-1])[0, 1])
    return Baseline(mean=float(x.mean()), std=float(x.std(ddof=1)), phi=round(phi, 4))


def corpus(seed: int = 17) -> list[Series]:
    rng = np.random.default_rng(seed)
    out = []
    for phi in PHIS:
        signal = Signal(mean=2.1, std=0.3, phi=phi)
        train = series(signal, int(TRAIN_S / POLL_S), POLL_S, rng, quantum=QUANTUM)
        base = _estimate(train)
        normal = series(
            signal, int(NORMAL_S / POLL_S), POLL_S, rng, wall0=rng.uniform(0, 86400),
            quantum=QUANTUM,
        )  # fmt: skip
        episodes = [Episode(None, normal.tolist(), math.inf)]
        for spec in SPECS:
            for _ in range(spec.reps):
                # The fault starts between two polls: the first faulty sample is the one at
                # WARMUP_S, up to one poll after the fault began.
                fault_at = WARMUP_S - rng.uniform(0, POLL_S)
                sign = rng.choice((-1.0, 1.0))
                fault = Fault(
                    spec.kind,
                    sign * spec.size * base.std / signal.std,
                    started=fault_at,
                    ramp_seconds=spec.ramp_s or 1.0,
                )
                n = int((WARMUP_S + spec.after_s) / POLL_S)
                x = series(
                    signal, n, POLL_S, rng, wall0=rng.uniform(0, 86400), fault=fault,
                    quantum=QUANTUM,
                )  # fmt: skip
                episodes.append(Episode(spec, x.tolist(), fault_at))
        out.append(Series(phi, base, base.std, episodes))
    return out


@dataclass
class Outcome:
    false_alarms: int = 0
    normal_s: float = 0.0
    delays: dict[str, list[float]] = field(default_factory=dict)  # inf: missed
    leads_1h: list[float] = field(default_factory=list)
    leads: dict[str, list[float]] = field(default_factory=dict)  # per ramp, in minutes
    first_by: dict[str, int] = field(default_factory=dict)
    false_by_phi: dict[str, int] = field(default_factory=dict)
    false_by: dict[str, int] = field(default_factory=dict)
    samples: int = 0


_WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def run_config(config: Config, data: list[Series]) -> Outcome:
    result = Outcome()
    for s in data:
        base = s.baseline if config.use_phi else s.baseline.model_copy(update={"phi": 0.0})
        for ep in s.episodes:
            alarms: list[tuple[float, str]] = []
            now = [0.0]

            def on_alarm(alert: DriftAlert, alarms: list[tuple[float, str]] = alarms,
                         now: list[float] = now) -> None:  # fmt: skip
                alarms.append((now[0], alert.detection.detector if alert.detection else "window"))

            det = DriftDetector(config.drift, on_alarm)
            det.configure("bench", config.metric)
            det.set_baseline("bench", config.metric.name, base)
            observe = det.observe
            name = config.metric.name
            for i, value in enumerate(ep.values):
                t = i * POLL_S
                now[0] = t
                observe("bench", name, t, value, _WHEN)
            result.samples += len(ep.values)
            false = [a for a in alarms if a[0] < ep.fault_at]
            result.false_alarms += len(false)
            key = f"{s.phi:g}"
            result.false_by_phi[key] = result.false_by_phi.get(key, 0) + len(false)
            for _, by in false:
                result.false_by[by] = result.false_by.get(by, 0) + 1
            result.normal_s += min(ep.fault_at, len(ep.values) * POLL_S)
            if ep.spec is None:
                continue
            hits = [a for a in alarms if a[0] >= ep.fault_at]
            delay = hits[0][0] - ep.fault_at if hits else math.inf
            result.delays.setdefault(ep.spec.name, []).append(delay)
            if hits:
                result.first_by[hits[0][1]] = result.first_by.get(hits[0][1], 0) + 1
            if ep.spec.kind is FaultKind.RAMP:
                result.leads.setdefault(ep.spec.name, []).append((ep.spec.ramp_s - delay) / 60)
            if ep.spec.name == "ramp_1h":
                result.leads_1h.append((ep.spec.ramp_s - delay) / 60)
    return result


def _pct(values: list[float], q: float) -> float | None:
    """A percentile that counts misses (inf) as later than every detection: None when the
    percentile falls on a miss."""
    v = float(np.percentile(np.array(values), q, method="higher"))
    return None if math.isinf(v) else round(v, 1)


def _finite(v: float) -> float | None:
    """JSON has no infinity: a lead of a missed ramp (−inf) reads null."""
    return round(v, 1) if math.isfinite(v) else None


def line(config: Config, out: Outcome, anchor: Outcome, n_series: int) -> dict[str, Any]:
    weeks = out.normal_s / (7 * 86400)
    faults: dict[str, dict[str, Any]] = {
        name: {
            "n": len(d),
            "detected": sum(not math.isinf(x) for x in d),
            "p50_s": _pct(d, 50),
            "p95_s": _pct(d, 95),
        }
        for name, d in out.delays.items()
    }
    total = sum(len(d) for d in out.delays.values())
    found = sum(sum(not math.isinf(x) for x in d) for d in out.delays.values())
    value = _pct(out.delays["step_6"], 95)
    anchor_value = _pct(anchor.delays["step_6"], 95)
    leads = np.array(out.leads_1h)
    return {
        "bench": "detection",
        "config": config.name,
        "value": value,
        "unit": "s (6σ step, p95 delay)",
        "anchor": anchor_value,
        "ratio": round(value / anchor_value, 3) if value and anchor_value else None,
        "step6_p95_s": value,
        "step3_p95_s": _pct(out.delays["step_3"], 95),
        # The lead 95 % of one-hour ramps got: minutes between the alarm and the ramp's 4σ.
        "ramp_lead_min": _finite(float(np.percentile(leads, 5))),
        "ramp_lead_p50_min": _finite(float(np.percentile(leads, 50))),
        # Every ramp to 4σ: the median minutes between its alarm and its reaching 4σ.
        "ramp_leads_p50_min": {
            name: _finite(float(np.percentile(v, 50))) for name, v in out.leads.items()
        },
        "false_alarms_per_week": round(out.false_alarms / weeks, 2),
        "false_alarms": out.false_alarms,
        "false_alarms_by_phi": out.false_by_phi,
        "false_alarms_by": out.false_by,
        "normal_weeks": round(weeks, 2),
        "detected_share": round(found / total, 4),
        "missed": total - found,
        "faults": faults,
        "first_alarm_by": out.first_by,
        "series": n_series,
        "poll_s": POLL_S,
        "window_s": config.drift.window_s,
        "detectors": {
            "cusum": config.metric.cusum.model_dump() if config.metric.cusum else None,
            "ewma": config.metric.ewma.model_dump() if config.metric.ewma else None,
            "stuck": config.metric.stuck.model_dump() if config.metric.stuck else None,
            "prewhitened": config.use_phi,
        },
        "anchor_is": "seed_rule: the 5-minute mean beyond 2σ, same corpus, same run",
    }


async def detection(
    settings: Settings, only: Callable[[str], bool] | None = None
) -> list[dict[str, Any]]:
    """One line per configuration; the seed rule runs first as everyone's anchor."""
    del settings  # offline: the shipped defaults are read from the models, not the environment
    t0 = time.perf_counter()
    data = corpus()
    gen_s = time.perf_counter() - t0
    chosen = [c for c in configs() if only is None or only(c.name) or c.name == "seed_rule"]
    outcomes = {}
    for config in chosen:
        c0 = time.perf_counter()
        outcomes[config.name] = (run_config(config, data), time.perf_counter() - c0)
    anchor = outcomes["seed_rule"][0]
    lines = []
    for config in chosen:
        out, seconds = outcomes[config.name]
        row = line(config, out, anchor, len(data))
        row["run_s"] = round(seconds, 1)
        row["corpus_s"] = round(gen_s, 1)
        row["samples"] = out.samples
        lines.append(row)
    return lines
