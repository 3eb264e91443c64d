"""Temporal Schedules for periodic work: created if missing, updated to match the settings."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from factorylm.models.base import Model
from factorylm.models.baselines import BaselineWorkflowInput
from factorylm.models.health import DailySummaryInput, HealthMonitorInput, SpoolLimits
from factorylm.models.lifecycle import DataLifecycleInput
from factorylm.models.monkey import MonkeyReportInput
from factorylm.plant import Plant
from factorylm.roster import scheduled_recipients, site_settings
from factorylm.settings import Settings
from workflows.baseline import BaselineWorkflow
from workflows.health import DailySummaryWorkflow, HealthMonitorWorkflow
from workflows.lifecycle import DataLifecycleWorkflow
from workflows.monkey import MonkeyReportWorkflow

log = logging.getLogger(__name__)

BASELINE_SCHEDULE_ID = "baselines"
HEALTH_SCHEDULE_ID = "health-monitor"
DAILY_SUMMARY_SCHEDULE_ID = "daily-summary"
MONKEY_REPORT_SCHEDULE_ID = "monkey-report"
LIFECYCLE_SCHEDULE_ID = "data-lifecycle"


def _every(seconds: float, run: Any, arg: Model, workflow_id: str, settings: Settings) -> Schedule:
    """A workflow started every `seconds`; a slow run is never stacked under the next one."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            run, arg, id=workflow_id, task_queue=settings.task_queue
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=seconds))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


def baseline_schedule(settings: Settings) -> Schedule:
    return _every(
        settings.baseline_every_s,
        BaselineWorkflow.run,
        BaselineWorkflowInput(
            window_hours=settings.baseline_window_hours,
            min_samples=settings.baseline_min_samples,
        ),
        "baseline",
        settings,
    )


def health_schedule(settings: Settings, plant: Plant | None = None) -> Schedule:
    # Every site's edge queue must have a worker polling it.
    edges = (
        [settings.edge_queue(site) for site in plant.site_names]
        if plant is not None
        else [settings.plc_task_queue]
    )
    return _every(
        settings.health_every_s,
        HealthMonitorWorkflow.run,
        HealthMonitorInput(
            task_queues=[settings.task_queue, *edges],
            spool=SpoolLimits(max_bytes=settings.spool_max_bytes),
            schedule_ids=[BASELINE_SCHEDULE_ID, DAILY_SUMMARY_SCHEDULE_ID],
            recipients=scheduled_recipients(settings),
        ),
        "health-monitor",
        settings,
    )


def daily_summary_schedule(settings: Settings) -> Schedule:
    hour, minute = (int(part) for part in settings.daily_summary_at.split(":"))
    return Schedule(
        action=ScheduleActionStartWorkflow(
            DailySummaryWorkflow.run,
            DailySummaryInput(
                hours=24,
                recipients=scheduled_recipients(settings),
                flood_alarms=settings.alarm_flood_alarms,
            ),
            id="daily-summary",
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(hour=[ScheduleRange(hour)], minute=[ScheduleRange(minute)])
            ],
            time_zone_name=settings.plant_timezone,
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


def monkey_report_schedule(settings: Settings, board_id: str | None = None) -> Schedule:
    return _every(
        settings.monkey_report_every_s,
        MonkeyReportWorkflow.run,
        MonkeyReportInput(
            board_id=board_id or settings.trello_board_id,
            recipients=scheduled_recipients(settings),
            report_key="",  # the workflow keys each report by its own run
        ),
        f"monkey-report-{board_id}" if board_id else "monkey-report",
        settings,
    )


def lifecycle_schedule(settings: Settings) -> Schedule:
    return _every(
        settings.lifecycle_every_s,
        DataLifecycleWorkflow.run,
        DataLifecycleInput(
            raw_retention_days=settings.raw_retention_days,
            lookback_minutes=settings.rollup_lookback_minutes,
        ),
        "data-lifecycle",
        settings,
    )


def schedules(settings: Settings, plant: Plant | None = None) -> dict[str, Schedule]:
    found = {
        BASELINE_SCHEDULE_ID: baseline_schedule(settings),
        HEALTH_SCHEDULE_ID: health_schedule(settings, plant),
        DAILY_SUMMARY_SCHEDULE_ID: daily_summary_schedule(settings),
        MONKEY_REPORT_SCHEDULE_ID: monkey_report_schedule(settings),
        LIFECYCLE_SCHEDULE_ID: lifecycle_schedule(settings),
    }
    # A site with its own Trello board gets its own Monkey report, to that site's people.
    for site in plant.sites if plant is not None else []:
        if site.trello_board:
            found[f"{MONKEY_REPORT_SCHEDULE_ID}-{site.name}"] = monkey_report_schedule(
                site_settings(settings, site), site.trello_board
            )
    return found


async def ensure_schedules(client: Client, settings: Settings, plant: Plant | None = None) -> None:
    for schedule_id, schedule in schedules(settings, plant).items():
        await _ensure(client, schedule_id, schedule)


async def _ensure(client: Client, schedule_id: str, schedule: Schedule) -> None:
    try:
        await client.create_schedule(schedule_id, schedule)
        log.info("created schedule %s", schedule_id)
    except ScheduleAlreadyRunningError:

        def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(update)
