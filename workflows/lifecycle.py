"""DataLifecycleWorkflow: roll raw samples up into 1-minute rows, then drop expired raw chunks.

Run by a Temporal Schedule (temporal/schedules.py) every `lifecycle_every_s`. Rolling up first
and dropping second, in one workflow, is what guarantees nothing is dropped before it is rolled
up; the database functions check the same thing again.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.lifecycle import LifecycleActivities
    from factorylm.models.lifecycle import (
        DataLifecycleInput,
        DataLifecycleResult,
        DropRawInput,
        RollUpInput,
    )

_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=5))


@workflow.defn
class DataLifecycleWorkflow:
    @workflow.run
    async def run(self, params: DataLifecycleInput) -> DataLifecycleResult:
        workflow.set_current_details("rolling raw samples up into 1-minute rows")
        rolled = await workflow.execute_activity_method(
            LifecycleActivities.roll_up_samples,
            RollUpInput(until=workflow.now(), lookback_minutes=params.lookback_minutes),
            start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=timedelta(minutes=5),
            retry_policy=_RETRY,
        )
        workflow.set_current_details(
            f"rolled up to {rolled.rolled_up_to}; dropping raw samples older than "
            f"{params.raw_retention_days:g} days"
        )
        dropped = await workflow.execute_activity_method(
            LifecycleActivities.drop_raw_samples,
            DropRawInput(
                raw_retention_days=params.raw_retention_days,
                lookback_minutes=params.lookback_minutes,
            ),
            start_to_close_timeout=timedelta(minutes=30),
            retry_policy=_RETRY,
        )
        late = (
            f"; {rolled.rerolled_minutes} minutes from {rolled.rerolled_from} re-rolled for "
            "samples that arrived late"
            if rolled.rerolled_minutes
            else ""
        )
        workflow.set_current_details(
            f"rolled up to {rolled.rolled_up_to} in {rolled.steps} steps; "
            f"{dropped} raw chunks dropped{late}"
        )
        return DataLifecycleResult(
            rolled_up_to=rolled.rolled_up_to,
            rollup_steps=rolled.steps,
            chunks_dropped=dropped,
            rerolled_from=rolled.rerolled_from,
            rerolled_minutes=rolled.rerolled_minutes,
        )
