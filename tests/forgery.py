"""What an intruder on the Temporal frontend would run (not product code): a workflow of its
own that schedules `write_plc_setpoint` by name on an edge queue of its choosing. Shared by
the security tests of the edge's checks."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

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
