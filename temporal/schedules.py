"""Temporal Schedules for periodic work: created if missing, updated to match the settings."""

from __future__ import annotations

import logging
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from factorylm.models import BaselineWorkflowInput
from factorylm.settings import Settings
from workflows.baseline import BaselineWorkflow

log = logging.getLogger(__name__)

BASELINE_SCHEDULE_ID = "baselines"


def baseline_schedule(settings: Settings) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            BaselineWorkflow.run,
            BaselineWorkflowInput(
                window_hours=settings.baseline_window_hours,
                min_samples=settings.baseline_min_samples,
            ),
            id="baseline",
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.baseline_every_s))]
        ),
        # A slow recompute is never stacked under the next one.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_schedules(client: Client, settings: Settings) -> None:
    schedule = baseline_schedule(settings)
    try:
        await client.create_schedule(BASELINE_SCHEDULE_ID, schedule)
        log.info("created schedule %s", BASELINE_SCHEDULE_ID)
    except ScheduleAlreadyRunningError:

        def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(BASELINE_SCHEDULE_ID).update(update)
