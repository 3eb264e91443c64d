"""Baseline statistics per PLC and metric, and the baseline report."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from factorylm.models.base import Model


class ComputeBaselinesInput(Model):
    run_key: str = Field(description="idempotency key: the workflow run")
    window_start: datetime
    window_end: datetime
    min_samples: int = Field(default=100, ge=2)
    min_minutes: int = Field(default=1, ge=1)


class BaselineRow(Model):
    plc_id: str
    metric: str
    mean: float
    std: float
    p95: float
    p99: float
    sample_count: int
    # Optional with a default: reports recorded before φ was computed still load.
    phi: float = Field(default=0.0, description="lag-1 autocorrelation of the samples")


class SkippedMetric(Model):
    plc_id: str
    metric: str
    reason: str


class BaselineReport(Model):
    run_key: str
    window_start: datetime
    window_end: datetime
    baselines: list[BaselineRow]
    skipped: list[SkippedMetric]

    def as_text(self) -> str:
        lines = [
            f"Baselines {self.window_start:%Y-%m-%d %H:%M} → {self.window_end:%Y-%m-%d %H:%M} UTC",
            f"{'PLC':<14}{'metric':<14}{'mean':>10}{'std':>10}{'p95':>10}{'p99':>10}{'n':>9}"
            f"{'φ':>7}",
        ]
        for b in self.baselines:
            lines.append(
                f"{b.plc_id:<14}{b.metric:<14}{b.mean:>10.4g}{b.std:>10.3g}{b.p95:>10.4g}"
                f"{b.p99:>10.4g}{b.sample_count:>9}{b.phi:>7.2f}"
            )
        for s in self.skipped:
            lines.append(f"{s.plc_id:<14}{s.metric:<14} not baselined: {s.reason}")
        return "\n".join(lines)


class BaselineWorkflowInput(Model):
    window_hours: float = Field(default=48.0, gt=0)
    min_samples: int = Field(default=100, ge=2)
    min_minutes: int = Field(default=1, ge=1)
