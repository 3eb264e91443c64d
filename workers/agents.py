"""The agents worker: workflows plus every activity except PLC writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.agents.registry import agent_activities, vector_memory
from activities.baselines import BaselineActivities
from activities.cmms import CmmsActivities
from activities.events import EventActivities
from activities.health import HealthActivities
from activities.monkey import monkey_activities
from activities.notify import NotifyActivities
from activities.photos import photo_activities
from activities.planning import PlanningActivities
from factorylm.plant import Plant
from factorylm.settings import Settings
from workflows.baseline import BaselineWorkflow
from workflows.drift_response import DriftResponseWorkflow
from workflows.health import DailySummaryWorkflow, HealthMonitorWorkflow
from workflows.monkey import MonkeyReportWorkflow, MonkeyWorkflow
from workflows.outcome_followup import OutcomeFollowUpWorkflow
from workflows.photo_intake import PhotoIntakeWorkflow

WORKFLOWS: list[type] = [
    DriftResponseWorkflow,
    BaselineWorkflow,
    OutcomeFollowUpWorkflow,
    HealthMonitorWorkflow,
    DailySummaryWorkflow,
    MonkeyWorkflow,
    MonkeyReportWorkflow,
    PhotoIntakeWorkflow,
]


def activities(pool: asyncpg.Pool, plant: Plant, settings: Settings) -> list[Callable[..., Any]]:
    notify = NotifyActivities(pool, settings)
    return [
        BaselineActivities(pool).compute_baselines,
        notify.send_report,
        notify.close_approval,
        notify.send_message,
        notify.request_outcome,
        notify.close_outcome,
        EventActivities(pool, vector_memory(pool, settings)).record_drift_event,
        PlanningActivities(plant, settings).plan_response,
        notify.request_approval,
        CmmsActivities(pool, settings).open_work_order,
        *agent_activities(pool, plant, settings),
        *monkey_activities(pool, settings),
        *photo_activities(pool, plant, settings),
    ]


def build_worker(client: Client, pool: asyncpg.Pool, plant: Plant, settings: Settings) -> Worker:
    # The health checks ask Temporal itself (task-queue pollers, schedules): they need the client.
    health = HealthActivities(pool, client, plant, settings.temporal_namespace)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        activities=[
            *activities(pool, plant, settings),
            health.check_health,
            health.update_incidents,
            health.restart_collectors,
            health.daily_summary,
        ],
    )
