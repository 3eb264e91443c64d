"""The agents worker: workflows plus every activity except PLC writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.baselines import BaselineActivities
from activities.cmms import CmmsActivities
from activities.events import EventActivities
from activities.notify import NotifyActivities
from activities.planning import PlanningActivities
from factorylm.plant import Plant
from factorylm.settings import Settings
from workflows.baseline import BaselineWorkflow
from workflows.drift_response import DriftResponseWorkflow

WORKFLOWS: list[type] = [DriftResponseWorkflow, BaselineWorkflow]


def activities(pool: asyncpg.Pool, plant: Plant, settings: Settings) -> list[Callable[..., Any]]:
    notify = NotifyActivities(pool)
    return [
        BaselineActivities(pool).compute_baselines,
        notify.send_report,
        EventActivities(pool).record_drift_event,
        PlanningActivities(plant, settings).plan_response,
        notify.request_approval,
        CmmsActivities(pool).open_work_order,
    ]


def build_worker(client: Client, pool: asyncpg.Pool, plant: Plant, settings: Settings) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        activities=activities(pool, plant, settings),
    )
