"""Drift alarms and the drift response's plan and result."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from factorylm.models.base import Model
from factorylm.models.forecasts import Forecast
from factorylm.models.messages import EscalationStep
from factorylm.plant import ActionKind, Policy


class Severity(StrEnum):
    WARNING = "warning"
    HIGH = "high"
    CRITICAL = "critical"

    @classmethod
    def for_sigma(cls, sigma: float) -> Severity:
        magnitude = abs(sigma)
        if magnitude >= 4:
            return cls.CRITICAL
        if magnitude >= 3:
            return cls.HIGH
        return cls.WARNING


class Detection(Model):
    """Which detector raised an alarm and why, in words a person can check against the data."""

    detector: Literal["window", "cusum", "ewma", "stuck", "limit", "forecast"]
    reason: str


class DriftAlert(Model):
    """A metric on one PLC has moved away from its baseline."""

    plc_id: str
    vendor: str
    metric: str
    # The PLC's site (factorylm/plant.py). Empty in alerts recorded before sites.
    site: str = ""
    unit: str = ""
    sigma: float = Field(description="(window mean - baseline mean) / baseline std")
    window_mean: float
    window_count: int
    window_seconds: float
    baseline_mean: float
    baseline_std: float
    sample_time: datetime = Field(description="time of the sample that crossed the threshold")
    detected_at: datetime
    related: dict[str, float] = Field(
        default_factory=dict, description="other drifting metrics on the same PLC: name -> sigma"
    )
    trace_context: dict[str, str] = Field(default_factory=dict)
    # Optional with a default: alerts recorded before detectors had names still load.
    detection: Detection | None = None
    # Where the metric's trend is heading, when it points at a threshold (ingest/forecast.py).
    forecast: Forecast | None = None
    # The alarm's short code (factorylm/alarms.py), set where the alarm enters the outbox and
    # shown first in every message about it, so a person can reply `SHELVE <code> 2h`.
    alarm_code: str = ""

    @property
    def severity(self) -> Severity:
        return Severity.for_sigma(self.sigma)

    @property
    def workflow_id(self) -> str:
        return drift_workflow_id(self.site, self.plc_id, self.metric)

    def describe(self) -> str:
        text = (
            f"{self.metric} on {self.plc_id} ({self.vendor}) drifted {self.sigma:+.1f}σ "
            f"over {self.window_seconds:g} s: mean {self.window_mean:.3g}{self.unit and ' '}"
            f"{self.unit} vs baseline {self.baseline_mean:.3g} ± {self.baseline_std:.2g}"
        )
        if self.detection is not None and self.detection.detector != "window":
            text = (
                f"{self.metric} on {self.plc_id} ({self.vendor}): {self.detection.detector} "
                f"alarm, {self.detection.reason}"
            )
        if self.alarm_code:
            text = f"Alarm {self.alarm_code}: {text}"
        if self.related:
            rel = ", ".join(f"{m} {s:+.1f}σ" for m, s in sorted(self.related.items()))
            text += f"; related: {rel}"
        # A forecast alarm's reason already is the forecast.
        forecast_alarm = self.detection is not None and self.detection.detector == "forecast"
        if self.forecast is not None and not forecast_alarm:
            text += f"; trend: {self.forecast.describe()}"
        return text


class RecordEventInput(Model):
    workflow_id: str
    alert: DriftAlert


class ProposedAction(Model):
    """An action an agent (the Weaver) suggests; plan_response checks it against the catalog."""

    action: str
    reason: str


class PlanResponseInput(Model):
    event_id: int
    alert: DriftAlert
    proposals: list[ProposedAction] = Field(
        default_factory=list, description="the Weaver's suggestions, best first; unchecked"
    )


class ActionProposal(Model):
    """One catalog action proposed for an event, with why."""

    action: str
    kind: ActionKind
    policy: Policy
    description: str
    reason: str
    site: str = ""  # whose catalog; empty in plans recorded before sites
    plc_id: str | None = None
    setpoint: str | None = None
    value: float | None = None


class ResponsePlan(Model):
    proposal: ActionProposal | None
    approvers: list[str]
    approval_timeout_s: float
    approval_validity_s: float = Field(
        default=600.0, description="how long an approval may still be written after it is given"
    )
    plc_task_queue: str = Field(description="the edge worker's queue, where PLC writes run")
    outcome_wait_s: float = Field(default=72 * 3600, description="how long to await the fix report")
    # From the on-call roster (factorylm/roster.py). Empty in plans recorded before rosters:
    # the workflow then asks `approvers` as it did.
    chain: list[EscalationStep] = Field(
        default_factory=list, description="whom to ask for an approval, in order"
    )
    chain_repeat: int = Field(default=0, description="times the chain runs again unanswered")
    page_chain: list[EscalationStep] = Field(
        default_factory=list, description="whom a notify action pages, in order, until an ACK"
    )
    page_repeat: int = 0


class DriftResponseResult(Model):
    workflow_id: str
    status: str
    event_id: int
    action: str | None
    policy: Policy | None
    approved_by: str | None
    value_written: float | None
    value_read_back: float | None
    work_order_id: str | None


def drift_workflow_id(site: str, plc_id: str, metric: str) -> str:
    """One workflow per site·PLC·metric: a drift storm on one metric is one workflow, and the
    Web UI's list says at a glance which site it is at."""
    return f"drift-{site}-{plc_id}-{metric}" if site else f"drift-{plc_id}-{metric}"
