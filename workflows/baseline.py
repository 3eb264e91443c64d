"""BaselineWorkflow: recompute every metric's normal from the last window of samples.

Run by a Temporal Schedule (temporal/schedules.py). The report goes to the notifier, and the
ingest's detectors reload the new baselines when the activity announces them.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.baselines import BaselineActivities
    from activities.notify import NotifyActivities
    from factorylm.models.baselines import (
        BaselineReport,
        BaselineWorkflowInput,
        ComputeBaselinesInput,
    )
    from factorylm.models.messages import SendReportInput

_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1))


@workflow.defn
class BaselineWorkflow:
    @workflow.run
    async def run(self, params: BaselineWorkflowInput) -> BaselineReport:
        info = workflow.info()
        end = workflow.now()
        start = end - timedelta(hours=params.window_hours)
        workflow.set_current_details(f"computing baselines over {params.window_hours:g} h")
        report: BaselineReport = await workflow.execute_activity_method(
            BaselineActivities.compute_baselines,
            ComputeBaselinesInput(
                run_key=f"{info.workflow_id}/{info.run_id}",
                window_start=start,
                window_end=end,
                min_samples=params.min_samples,
                min_minutes=params.min_minutes,
            ),
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=_RETRY,
        )
        await workflow.execute_activity_method(
            NotifyActivities.send_report,
            SendReportInput(
                dedup_key=f"baselines/{info.workflow_id}/{info.run_id}",
                subject=f"{len(report.baselines)} baselines, {len(report.skipped)} skipped",
                body=report.as_text(),
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=_RETRY,
        )
        workflow.set_current_details(
            f"{len(report.baselines)} baselines stored, {len(report.skipped)} metrics skipped"
        )
        return report
