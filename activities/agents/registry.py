"""The agent activities with their dependencies, for the agents worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from activities.agents.alarm_triage import AlarmTriage
from activities.agents.manual_hunter import ManualHunter
from activities.agents.outcomes import OutcomeActivities
from activities.agents.watchman import Watchman
from activities.agents.weaver import Weaver
from factorylm.embeddings import get_embedder
from factorylm.llm import build_router
from factorylm.manuals import ManualStore
from factorylm.memory import VectorMemory
from factorylm.plant import Plant
from factorylm.settings import Settings


def vector_memory(pool: asyncpg.Pool, settings: Settings) -> VectorMemory:
    return VectorMemory(pool, get_embedder(settings), ef_search=settings.memory_ef_search)


def agent_activities(
    pool: asyncpg.Pool, plant: Plant, settings: Settings
) -> list[Callable[..., Any]]:
    memory = vector_memory(pool, settings)
    router = build_router(settings, pool)
    store = ManualStore(pool, get_embedder(settings), ef_search=settings.memory_ef_search)
    return [
        ManualHunter(store).manual_hunter,
        AlarmTriage(memory, router).alarm_triage,
        Watchman(pool).watchman,
        Weaver(plant, router).weaver_report,
        OutcomeActivities(memory, router).record_outcome,
    ]
