"""The health monitor's checks, incidents and the daily summary."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from factorylm.models.base import Model


class HealthCheckInput(Model):
    task_queues: list[str]
    schedule_ids: list[str]
    stale_after_s: float = Field(default=150.0, gt=0)


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
