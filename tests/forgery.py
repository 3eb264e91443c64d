"""What an intruder on the Temporal frontend would run (not product code): a workflow of its
own that schedules `write_plc_setpoint` by name on an edge queue of its choosing. Shared by
the security tests of the edge's checks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from factorylm.models.plc_writes import PlcWriteInput, PlcWriteResult


class Forgery(BaseModel):
    write: PlcWriteInput
    edge_queue: str


@workflow.defn(sandboxed=False)
class ForgedWriteWorkflow:
    @workflow.run
    async def run(self, forgery: Forgery) -> PlcWriteResult:
        result: PlcWriteResult = await workflow.execute_activity(
            "write_plc_setpoint",
            forgery.write,
            result_type=PlcWriteResult,
            task_queue=forgery.edge_queue,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
        return result


async def refusal_of(
    client: Client, write: PlcWriteInput, *, edge_queue: str, attacker_queue: str
) -> ApplicationError:
    """Run the forged write as workflow `write.workflow_id` on `edge_queue`; the edge's
    refusal (the test fails if the write went through or failed otherwise)."""
    with pytest.raises(WorkflowFailureError) as failed:
        await client.execute_workflow(
            ForgedWriteWorkflow.run,
            Forgery(write=write, edge_queue=edge_queue),
            id=write.workflow_id,
            task_queue=attacker_queue,
        )
    activity_error = failed.value.cause
    assert isinstance(activity_error, ActivityError)
    refusal = activity_error.cause
    assert isinstance(refusal, ApplicationError) and refusal.non_retryable
    return refusal
