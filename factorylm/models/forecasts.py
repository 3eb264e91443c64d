"""A metric's time-to-threshold forecast: when its trend will reach an action threshold."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field

from factorylm.models.base import Model


def _duration(seconds: float) -> str:
    if seconds < 90 * 60:
        return f"{max(1, round(seconds / 60))} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.1f} d"


class Forecast(Model):
    """A robust (Theil–Sen) trend over the recent 1-minute means, extended to the nearest
    threshold it points at: the critical level (4σ from the baseline) or a hard limit."""

    plc_id: str
    metric: str
    unit: str = ""
    target: Literal["sigma", "max", "min"] = Field(description="which threshold it will reach")
    threshold: float = Field(description="the threshold, in the metric's unit")
    threshold_sigma: float = Field(description="the threshold in baseline σ from the mean")
    level: float = Field(description="the trend's value now, in the metric's unit")
    slope_per_hour: float = Field(description="the trend, in the metric's unit per hour")
    eta_s: float = Field(gt=0, description="seconds until the trend reaches the threshold")
    eta_low_s: float = Field(gt=0, description="earliest, from the slope's 95 % interval")
    eta_high_s: float | None = Field(
        default=None, description="latest, from the slope's 95 % interval; none: no bound"
    )
    minutes: int = Field(description="how many 1-minute means the trend was fitted to")
    computed_at: datetime

    @property
    def due(self) -> datetime:
        """When the threshold is expected: a work order's due date at the latest."""
        return self.computed_at + timedelta(seconds=self.eta_s)

    def describe(self) -> str:
        what = (
            f"{self.threshold_sigma:g}σ"
            if self.target == "sigma"
            else f"its hard {self.target} {self.threshold:g}"
        )
        unit = f" {self.unit}" if self.unit else ""
        high = _duration(self.eta_high_s) if self.eta_high_s is not None else "open"
        return (
            f"{self.metric} on {self.plc_id} will reach {what} ({self.threshold:.3g}{unit}) "
            f"in ~{_duration(self.eta_s)} (range {_duration(self.eta_low_s)}–{high})"
        )
