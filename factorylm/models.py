"""Domain models passed between the ingest, workflows and activities.

One pydantic model per workflow/activity input and output, serialised by temporalio's pydantic
data converter. They stay small: blobs travel as references, never inline.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from factorylm.plant import ActionKind, Policy


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


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


class DriftAlert(_Model):
    """A metric on one PLC has moved away from its baseline."""

    plc_id: str
    vendor: str
    metric: str
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

    @property
    def severity(self) -> Severity:
        return Severity.for_sigma(self.sigma)

    @property
    def workflow_id(self) -> str:
        return drift_workflow_id(self.plc_id, self.metric)

    def describe(self) -> str:
        text = (
            f"{self.metric} on {self.plc_id} ({self.vendor}) drifted {self.sigma:+.1f}σ "
            f"over {self.window_seconds:g} s: mean {self.window_mean:.3g}{self.unit and ' '}"
            f"{self.unit} vs baseline {self.baseline_mean:.3g} ± {self.baseline_std:.2g}"
        )
        if self.related:
            rel = ", ".join(f"{m} {s:+.1f}σ" for m, s in sorted(self.related.items()))
            text += f"; related: {rel}"
        return text


def drift_workflow_id(plc_id: str, metric: str) -> str:
    return f"drift-{plc_id}-{metric}"


class RecordEventInput(_Model):
    workflow_id: str
    alert: DriftAlert


class ProposedAction(_Model):
    """An action an agent (the Weaver) suggests; plan_response checks it against the catalog."""

    action: str
    reason: str


class PlanResponseInput(_Model):
    event_id: int
    alert: DriftAlert
    proposals: list[ProposedAction] = Field(
        default_factory=list, description="the Weaver's suggestions, best first; unchecked"
    )


class ActionProposal(_Model):
    """One catalog action proposed for an event, with why."""

    action: str
    kind: ActionKind
    policy: Policy
    description: str
    reason: str
    plc_id: str | None = None
    setpoint: str | None = None
    value: float | None = None


class ResponsePlan(_Model):
    proposal: ActionProposal | None
    approvers: list[str]
    approval_timeout_s: float
    plc_task_queue: str = Field(description="the edge worker's queue, where PLC writes run")
    outcome_wait_s: float = Field(default=72 * 3600, description="how long to await the fix report")


class RequestApprovalInput(_Model):
    workflow_id: str
    code: str
    alert: DriftAlert
    proposal: ActionProposal
    recipients: list[str]
    summary: str = Field(default="", description="the agents' findings, in a few lines")
    escalation: bool = Field(default=False, description="the on-duty approver did not answer")
    timeout_s: float = 300.0


class CloseApprovalInput(_Model):
    workflow_id: str
    code: str
    status: str = Field(pattern="^(approved|denied|expired|escalated)$")
    answered_by: str | None = None


class SendMessageInput(_Model):
    dedup_key: str
    recipients: list[str]
    body: str
    workflow_id: str | None = None


class RequestOutcomeInput(_Model):
    workflow_id: str
    event_id: int
    recipient: str
    work_order_id: str
    summary: str


class FollowUpInput(_Model):
    drift_workflow_id: str
    event_id: int
    recipient: str
    work_order_id: str
    summary: str
    wait_s: float


class FollowUpResult(_Model):
    answer: str | None
    recorded: bool


class CloseOutcomeInput(_Model):
    workflow_id: str
    answer: str | None


class ApprovalDecision(_Model):
    """A person's answer to a pending approval request."""

    approve: bool
    approver: str = Field(min_length=1)
    code: str | None = Field(default=None, description="the request code, when the channel has one")
    note: str = ""


class PendingApproval(_Model):
    code: str
    action: str
    requested_at: datetime
    approvers: list[str]


class PlcWriteInput(_Model):
    action_id: str = Field(description="unique per workflow and action: the idempotency key")
    workflow_id: str
    action: str
    value: float
    approved_by: str | None = None


class PlcWriteResult(_Model):
    action_id: str
    plc_id: str
    setpoint: str
    value_before: float | None
    value_written: float
    value_read_back: float
    verified: bool


class WorkOrderPriority(StrEnum):
    NONE = "NONE"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class AttachmentRef(_Model):
    """A file in the blob store (photos, reports): payloads carry the reference, not bytes."""

    name: str
    content_type: str
    path: str


class OpenWorkOrderInput(_Model):
    external_key: str = Field(description="idempotency key: a retried activity never opens two")
    title: str
    description: str
    priority: WorkOrderPriority = WorkOrderPriority.MEDIUM
    asset_id: str | None = None
    due_date: date | None = None
    attachments: list[AttachmentRef] = Field(default_factory=list)


class WorkOrderRef(_Model):
    id: str
    created: bool
    system: str = "builtin"


class DriftResponseResult(_Model):
    workflow_id: str
    status: str
    event_id: int
    action: str | None
    policy: Policy | None
    approved_by: str | None
    value_written: float | None
    value_read_back: float | None
    work_order_id: str | None


class ComputeBaselinesInput(_Model):
    run_key: str = Field(description="idempotency key: the workflow run")
    window_start: datetime
    window_end: datetime
    min_samples: int = Field(default=100, ge=2)
    min_minutes: int = Field(default=1, ge=1)


class BaselineRow(_Model):
    plc_id: str
    metric: str
    mean: float
    std: float
    p95: float
    p99: float
    sample_count: int


class SkippedMetric(_Model):
    plc_id: str
    metric: str
    reason: str


class BaselineReport(_Model):
    run_key: str
    window_start: datetime
    window_end: datetime
    baselines: list[BaselineRow]
    skipped: list[SkippedMetric]

    def as_text(self) -> str:
        lines = [
            f"Baselines {self.window_start:%Y-%m-%d %H:%M} → {self.window_end:%Y-%m-%d %H:%M} UTC",
            f"{'PLC':<14}{'metric':<14}{'mean':>10}{'std':>10}{'p95':>10}{'p99':>10}{'n':>9}",
        ]
        for b in self.baselines:
            lines.append(
                f"{b.plc_id:<14}{b.metric:<14}{b.mean:>10.4g}{b.std:>10.3g}{b.p95:>10.4g}"
                f"{b.p99:>10.4g}{b.sample_count:>9}"
            )
        for s in self.skipped:
            lines.append(f"{s.plc_id:<14}{s.metric:<14} not baselined: {s.reason}")
        return "\n".join(lines)


class BaselineWorkflowInput(_Model):
    window_hours: float = Field(default=48.0, gt=0)
    min_samples: int = Field(default=100, ge=2)
    min_minutes: int = Field(default=1, ge=1)


class SendReportInput(_Model):
    dedup_key: str
    subject: str
    body: str


class HealthCheckInput(_Model):
    task_queues: list[str]
    schedule_ids: list[str]
    stale_after_s: float = Field(default=150.0, gt=0)


class CheckResult(_Model):
    check: str
    subject: str
    ok: bool
    critical: bool
    detail: str


class HealthReport(_Model):
    results: list[CheckResult]
    trace_id: str | None = None

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]


class IncidentUpdateInput(_Model):
    report: HealthReport


class Incident(_Model):
    id: int
    check: str
    subject: str
    detail: str
    critical: bool


class IncidentUpdate(_Model):
    opened: list[Incident]
    closed: int


class RestartCollectorsInput(_Model):
    plc_ids: list[str]


class HealthMonitorInput(_Model):
    task_queues: list[str]
    schedule_ids: list[str]
    recipients: list[str]


class HealthRunResult(_Model):
    ok: bool
    checks: int
    failures: list[str]
    alerts_sent: int
    restarted: list[str]
    trace_id: str | None


class DailySummaryInput(_Model):
    hours: float = 24.0
    recipients: list[str]


class DailySummary(_Model):
    since: datetime
    until: datetime
    alerts_processed: int
    auto_resolved: int
    approvals: dict[str, int]
    plc_writes: dict[str, int]
    work_orders: int
    tokens: int
    cost_usd: float
    collector_uptime_pct: float

    def as_text(self) -> str:
        approvals = ", ".join(f"{k} {v}" for k, v in sorted(self.approvals.items())) or "none"
        writes = ", ".join(f"{k} {v}" for k, v in sorted(self.plc_writes.items())) or "none"
        return (
            f"FactoryLM daily summary {self.since:%Y-%m-%d %H:%M} → {self.until:%H:%M} UTC\n"
            f"Alerts processed: {self.alerts_processed} (auto-resolved {self.auto_resolved})\n"
            f"Approvals: {approvals}\nPLC writes: {writes}\n"
            f"Work orders opened: {self.work_orders}\n"
            f"LLM tokens: {self.tokens} (${self.cost_usd:.2f})\n"
            f"Collector uptime: {self.collector_uptime_pct:.1f} %"
        )
