"""The agents worker: every workflow, and every activity except PLC writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.agents.alarm_triage import AlarmTriage
from activities.agents.manual_hunter import ManualHunter
from activities.agents.outcomes import OutcomeActivities
from activities.agents.watchman import Watchman
from activities.agents.weaver import Weaver
from activities.baselines import BaselineActivities
from activities.budget import BudgetActivities
from activities.cartographer import CartographerActivities
from activities.cmms import CmmsActivities
from activities.events import EventActivities
from activities.health import HealthActivities
from activities.lifecycle import LifecycleActivities
from activities.monkey import MonkeyActivities, cartographer_for
from activities.notify import NotifyActivities
from activities.photos import PhotoActivities
from activities.planning import PlanningActivities
from factorylm.embeddings import get_embedder
from factorylm.llm import build_router
from factorylm.manuals import ManualStore
from factorylm.memory import vector_memory
from factorylm.photos.store import photo_store_for
from factorylm.plant import Plant
from factorylm.settings import Settings
from workers.registry import bind
from workflows.alarm_notice import AlarmNoticeWorkflow
from workflows.baseline import BaselineWorkflow
from workflows.conductor import ROUTES
from workflows.drift_response import DriftResponseWorkflow
from workflows.health import DailySummaryWorkflow, HealthMonitorWorkflow
from workflows.lifecycle import DataLifecycleWorkflow
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
    DataLifecycleWorkflow,
    AlarmNoticeWorkflow,  # a flood's grouped message (ingest/alarms.py)
]

# The Monkey's own (it also sends messages through NotifyActivities.send_message).
MONKEY_ACTIVITIES: list[Callable[..., Any]] = [
    MonkeyActivities.read_sprint,
    MonkeyActivities.update_card,
    MonkeyActivities.prepare_workspace,
    CartographerActivities.map_repository,
    MonkeyActivities.execute_card,
    MonkeyActivities.publish_branch,
    MonkeyActivities.merge_card,
    MonkeyActivities.progress_report,
    BudgetActivities.check_budget,
]

ACTIVITIES: list[Callable[..., Any]] = [
    # drift response
    EventActivities.record_drift_event,
    PlanningActivities.plan_response,
    *(route.activity for route in ROUTES.values()),  # the Conductor's agents
    CmmsActivities.open_work_order,
    # people
    NotifyActivities.request_approval,
    NotifyActivities.close_approval,
    NotifyActivities.send_message,
    NotifyActivities.request_outcome,
    NotifyActivities.close_outcome,
    NotifyActivities.send_report,
    OutcomeActivities.record_outcome,
    # baselines and health
    BaselineActivities.compute_baselines,
    HealthActivities.check_health,
    HealthActivities.update_incidents,
    HealthActivities.restart_collectors,
    HealthActivities.daily_summary,
    # data lifecycle
    LifecycleActivities.roll_up_samples,
    LifecycleActivities.drop_raw_samples,
    *MONKEY_ACTIVITIES,
    # photos
    PhotoActivities.analyse_photo,
    PhotoActivities.resolve_asset,
    PhotoActivities.ask_for_asset,
    PhotoActivities.close_asset_question,
    PhotoActivities.photo_attachment,
    PhotoActivities.record_photo,
]


def instances(client: Client, pool: asyncpg.Pool, plant: Plant, settings: Settings) -> list[object]:
    """One instance per activity class, holding what its activities need."""
    memory = vector_memory(pool, settings)
    router = build_router(settings, pool)
    manuals = ManualStore(pool, get_embedder(settings), ef_search=settings.memory_ef_search)
    return [
        EventActivities(pool, memory),
        PlanningActivities(plant, settings),
        ManualHunter(manuals),
        AlarmTriage(memory, router),
        Watchman(pool),
        Weaver(plant, router),
        CmmsActivities(pool, settings),
        NotifyActivities(pool, settings),
        OutcomeActivities(memory, router),
        BaselineActivities(pool),
        LifecycleActivities(pool),
        # The health checks ask Temporal itself (task-queue pollers, schedules): the client.
        HealthActivities(pool, client, plant, settings.temporal_namespace),
        MonkeyActivities(pool, settings),
        cartographer_for(pool, settings),
        BudgetActivities(pool, settings),
        PhotoActivities(pool, plant, settings, photo_store_for(settings)),
    ]


def monkey_activities(pool: asyncpg.Pool, settings: Settings) -> list[Callable[..., Any]]:
    """The Monkey's activities and the message sender, for a worker that runs only the Monkey."""
    return bind(
        [*MONKEY_ACTIVITIES, NotifyActivities.send_message],
        [
            MonkeyActivities(pool, settings),
            cartographer_for(pool, settings),
            BudgetActivities(pool, settings),
            NotifyActivities(pool, settings),
        ],
    )


def build_worker(client: Client, pool: asyncpg.Pool, plant: Plant, settings: Settings) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        activities=bind(ACTIVITIES, instances(client, pool, plant, settings)),
    )
