"""HealthMonitorWorkflow (every 5 minutes) and DailySummaryWorkflow (once a day), both on
Temporal Schedules. A critical failure becomes one incident and one alert — not an alert every
five minutes — and a failing collector is restarted in the ingest process."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.health import HealthActivities
    from activities.notify import NotifyActivities
    from factorylm.models.health import (
        DailySummary,
        DailySummaryInput,
        HealthCheckInput,
        HealthMonitorInput,
        HealthReport,
        HealthRunResult,
        IncidentUpdate,
        IncidentUpdateInput,
        RestartCollectorsInput,
    )
    from factorylm.models.messages import SendMessageInput, SendReportInput

_SHORT = timedelta(seconds=30)
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


@workflow.defn
class HealthMonitorWorkflow:
    @workflow.run
    async def run(self, req: HealthMonitorInput) -> HealthRunResult:
        report: HealthReport = await workflow.execute_activity_method(
            HealthActivities.check_health,
            HealthCheckInput(
                task_queues=req.task_queues, schedule_ids=req.schedule_ids, spool=req.spool
            ),
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        update: IncidentUpdate = await workflow.execute_activity_method(
            HealthActivities.update_incidents,
            IncidentUpdateInput(report=report),
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        new_critical = [i for i in update.opened if i.critical]
        alerts = 0
        if new_critical and req.recipients:
            lines = [f"- {i.check} {i.subject}: {i.detail}" for i in new_critical]
            trace = f"\nTrace: {report.trace_id}" if report.trace_id else ""
            alerts = await workflow.execute_activity_method(
                NotifyActivities.send_message,
                SendMessageInput(
                    dedup_key="health/" + ",".join(str(i.id) for i in new_critical),
                    recipients=req.recipients[:1],
                    body="FactoryLM health: critical\n" + "\n".join(lines) + trace,
                    workflow_id=workflow.info().workflow_id,
                ),
                start_to_close_timeout=_SHORT,
                retry_policy=_RETRY,
            )
        restart = [i.subject for i in new_critical if i.check == "collector"]
        if restart:
            await workflow.execute_activity_method(
                HealthActivities.restart_collectors,
                RestartCollectorsInput(plc_ids=restart),
                start_to_close_timeout=_SHORT,
                retry_policy=_RETRY,
            )
        failures = [f"{r.check}:{r.subject}" for r in report.failures]
        workflow.set_current_details(
            "all parts healthy" if not failures else "failing: " + ", ".join(failures)
        )
        return HealthRunResult(
            ok=not failures,
            checks=len(report.results),
            failures=failures,
            alerts_sent=alerts,
            restarted=restart,
            trace_id=report.trace_id,
        )


@workflow.defn
class DailySummaryWorkflow:
    @workflow.run
    async def run(self, req: DailySummaryInput) -> DailySummary:
        summary: DailySummary = await workflow.execute_activity_method(
            HealthActivities.daily_summary,
            req,
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=_RETRY,
        )
        info = workflow.info()
        text = summary.as_text()
        if req.recipients:
            await workflow.execute_activity_method(
                NotifyActivities.send_message,
                SendMessageInput(
                    dedup_key=f"daily/{info.workflow_id}/{info.run_id}",
                    recipients=req.recipients[:1],
                    body=text,
                    workflow_id=info.workflow_id,
                ),
                start_to_close_timeout=_SHORT,
                retry_policy=_RETRY,
            )
        await workflow.execute_activity_method(
            NotifyActivities.send_report,
            SendReportInput(
                dedup_key=f"daily-report/{info.run_id}", subject="Daily summary", body=text
            ),
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        return summary
