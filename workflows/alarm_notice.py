"""AlarmNoticeWorkflow: the ingest's messages about alarms (a flood's grouped list) reach people
through the one outbound path, NotifyActivities.send_message, like every other message. The
workflow id is the notice's dedup key, so a start repeated by the ingest sends nothing twice."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.notify import NotifyActivities
    from factorylm.models.alarms import AlarmNoticeInput
    from factorylm.models.messages import SendMessageInput

_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@workflow.defn
class AlarmNoticeWorkflow:
    @workflow.run
    async def run(self, req: AlarmNoticeInput) -> int:
        sent: int = await workflow.execute_activity_method(
            NotifyActivities.send_message,
            SendMessageInput(
                dedup_key=req.dedup_key,
                recipients=req.recipients,
                body=req.body,
                workflow_id=workflow.info().workflow_id,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=_RETRY,
        )
        return sent
