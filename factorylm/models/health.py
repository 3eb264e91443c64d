"""The health monitor's checks, incidents and the daily summary."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from factorylm.models.base import Model

# The ingest's default spool bound (the `spool_max_bytes` setting).
DEFAULT_SPOOL_MAX_BYTES = 2 * 1024**3


class SpoolLimits(Model):
    """When an ingest's store-and-forward spool (ingest/spool.py) is worth an alert."""

    # The ingests whose spools are checked: None, every one that reported in the last day.
    ingest_hosts: list[str] | None = None
    # The ingests' `spool_max_bytes`; past it the spool drops its oldest samples.
    max_bytes: int = Field(default=DEFAULT_SPOOL_MAX_BYTES, gt=0)
    full_pct: float = Field(default=80.0, gt=0, le=100)
    # The oldest unsent sample unchanged this long while the ingest reaches the database.
    stall_after_s: float = Field(default=600.0, gt=0)
    # A loss stays an open incident this long after the last sample dropped.
    loss_hold_s: float = Field(default=3600.0, gt=0)


class HealthCheckInput(Model):
    task_queues: list[str]
    schedule_ids: list[str]
    stale_after_s: float = Field(default=150.0, gt=0)
    spool: SpoolLimits = SpoolLimits()


class CheckResult(Model):
    check: str
    subject: str
    ok: bool
    critical: bool
    detail: str


class HealthReport(Model):
    results: list[CheckResult]
    trace_id: str | None = None

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]


class IncidentUpdateInput(Model):
    report: HealthReport


class Incident(Model):
    id: int
    check: str
    subject: str
    detail: str
    critical: bool


class IncidentUpdate(Model):
    opened: list[Incident]
    closed: int


class RestartCollectorsInput(Model):
    plc_ids: list[str]


class HealthMonitorInput(Model):
    task_queues: list[str]
    schedule_ids: list[str]
    recipients: list[str]
    # Optional: runs scheduled before the spool checks still load (replay).
    spool: SpoolLimits = SpoolLimits()


class HealthRunResult(Model):
    ok: bool
    checks: int
    failures: list[str]
    alerts_sent: int
    restarted: list[str]
    trace_id: str | None


class DailySummaryInput(Model):
    hours: float = 24.0
    recipients: list[str]
    # More alarms than this shown in 10 minutes is a flood (the `alarm_flood_alarms` setting).
    flood_alarms: int = 10


class AlarmCount(Model):
    code: str
    plc_id: str
    metric: str
    count: int


class StandingAlarm(Model):
    code: str
    plc_id: str
    metric: str
    since: datetime


class ShelvedAlarm(Model):
    code: str
    plc_id: str
    metric: str
    by: str
    until: datetime


class AlarmKpis(Model):
    """ISA-18.2's alarm KPIs over a period, from the alarm journal (factorylm/alarms.py)."""

    raised: int
    annunciated: int = Field(description="shown to a person: own message or a flood message")
    shelved_raises: int
    suppressed: int
    in_flood_messages: int
    per_10_min: float
    peak_10_min: int
    flood_pct: float = Field(description="share of the 10-minute periods above the threshold")
    flood_threshold: int
    top: list[AlarmCount]
    standing: list[StandingAlarm]
    shelved: list[ShelvedAlarm]
    chattering: list[AlarmCount]

    def as_lines(self) -> list[str]:
        def name(code: str, plc_id: str, metric: str) -> str:
            return f"{code} {metric} on {plc_id}"

        lines = [
            f"Alarms: {self.annunciated} shown of {self.raised} raised "
            f"({self.shelved_raises} while shelved, {self.suppressed} suppressed, "
            f"{self.in_flood_messages} in flood messages); {self.per_10_min:g} per 10 min, "
            f"peak {self.peak_10_min}, in flood {self.flood_pct:g} % of the time "
            f"(> {self.flood_threshold} per 10 min)"
        ]
        if self.top:
            lines.append(
                "Most frequent: "
                + ", ".join(f"{name(a.code, a.plc_id, a.metric)} ×{a.count}" for a in self.top)
            )
        if self.standing:
            lines.append(
                "Standing: "
                + ", ".join(
                    f"{name(a.code, a.plc_id, a.metric)} since {a.since:%m-%d %H:%M}"
                    for a in self.standing
                )
            )
        if self.shelved:
            lines.append(
                "Shelved: "
                + ", ".join(
                    f"{name(a.code, a.plc_id, a.metric)} until {a.until:%m-%d %H:%M} by {a.by}"
                    for a in self.shelved
                )
            )
        if self.chattering:
            lines.append(
                "Chattering (bad actors): "
                + ", ".join(
                    f"{name(a.code, a.plc_id, a.metric)} flagged ×{a.count}"
                    for a in self.chattering
                )
            )
        return lines


class DailySummary(Model):
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
    # Optional: summaries recorded before the alarm journal still load (replay).
    alarms: AlarmKpis | None = None

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
        ) + "".join(f"\n{line}" for line in (self.alarms.as_lines() if self.alarms else []))
