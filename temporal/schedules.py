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
from factorylm.trello.models import MonkeyReportInput
from workflows.baseline import BaselineWorkflow
from workflows.monkey import MonkeyReportWorkflow

log = logging.getLogger(__name__)

BASELINE_SCHEDULE_ID = "baselines"
MONKEY_REPORT_SCHEDULE_ID = "monkey-report"


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


def monkey_report_schedule(settings: Settings) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            MonkeyReportWorkflow.run,
            MonkeyReportInput(
                board_id=settings.trello_board_id,
                recipients=list(settings.approvers),
                report_key="",  # the workflow keys each report by its own run
            ),
            id="monkey-report",
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(
            intervals=[
                ScheduleIntervalSpec(every=timedelta(seconds=settings.monkey_report_every_s))
            ]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_schedules(client: Client, settings: Settings) -> None:
    for schedule_id, schedule in (
        (BASELINE_SCHEDULE_ID, baseline_schedule(settings)),
        (MONKEY_REPORT_SCHEDULE_ID, monkey_report_schedule(settings)),
    ):
        try:
            await client.create_schedule(schedule_id, schedule)
            log.info("created schedule %s", schedule_id)
        except ScheduleAlreadyRunningError:

            def update(_: ScheduleUpdateInput, new: Schedule = schedule) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=new)

            await client.get_schedule_handle(schedule_id).update(update)
