"""OutcomeFollowUpWorkflow: after a work order, ask the technician what they found and fixed,
and wait — days if need be — for the reply, which then goes into the plant's memory.

A child of the drift response with ParentClosePolicy.ABANDON: the drift response completes
when its work order exists, so a new drift on the same machine gets a new response at once.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.replies import replied_within

with workflow.unsafe.imports_passed_through():
    from activities.agents.outcomes import OutcomeActivities
    from activities.notify import NotifyActivities
    from factorylm.models.agents import OutcomeRecord, RecordOutcomeInput
    from factorylm.models.outcomes import (
        CloseOutcomeInput,
        FollowUpInput,
        FollowUpResult,
        RequestOutcomeInput,
    )

_SHORT = timedelta(seconds=30)
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@workflow.defn
class OutcomeFollowUpWorkflow:
    def __init__(self) -> None:
        self._answer: str | None = None

    @workflow.run
    async def run(self, req: FollowUpInput) -> FollowUpResult:
        me = workflow.info().workflow_id
        await workflow.execute_activity_method(
            NotifyActivities.request_outcome,
            RequestOutcomeInput(
                workflow_id=me,
                event_id=req.event_id,
                recipient=req.recipient,
                work_order_id=req.work_order_id,
                summary=req.summary,
            ),
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        workflow.set_current_details(f"waiting for {req.recipient}'s report on {req.work_order_id}")
        await replied_within(lambda: self._answer is not None, req.wait_s, "outcome reply timer")
        await workflow.execute_activity_method(
            NotifyActivities.close_outcome,
            CloseOutcomeInput(workflow_id=me, answer=self._answer),
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        recorded = False
        if self._answer is not None:
            recorded = await self._remember(req.event_id, self._answer)
        workflow.set_current_details(f"outcome: {self._answer or 'no reply'}")
        return FollowUpResult(answer=self._answer, recorded=recorded)

    async def _remember(self, event_id: int, text: str) -> bool:
        """The agents classify the report (resolved, false alarm, action taken) into the
        event's memory, so the next similar drift leads with what worked."""
        record: OutcomeRecord = await workflow.execute_activity_method(
            OutcomeActivities.record_outcome,
            RecordOutcomeInput(event_id=event_id, text=text),
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=_RETRY,
        )
        workflow.set_current_details(f"outcome recorded: {record.kind}")
        return True

    @workflow.signal
    def outcome(self, text: str) -> None:
        if self._answer is None and text.strip():
            self._answer = text.strip()

    @workflow.query
    def answer(self) -> str | None:
        return self._answer
