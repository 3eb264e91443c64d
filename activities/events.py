"""Drift events: the plant's memory of what drifted, and later what fixed it."""

from __future__ import annotations

import logging

import asyncpg
from temporalio import activity

from factorylm.embeddings import EmbeddingModelError
from factorylm.memory import VectorMemory
from factorylm.models.drift import RecordEventInput

log = logging.getLogger(__name__)


class EventActivities:
    def __init__(self, pool: asyncpg.Pool, memory: VectorMemory | None = None) -> None:
        self._pool = pool
        self._memory = memory

    @activity.defn(name="record_drift_event")
    async def record_drift_event(self, req: RecordEventInput) -> int:
        a = req.alert
        text = a.describe()
        # Upsert on (workflow, detection time): a retried activity returns the same event.
        event_id: int = await self._pool.fetchval(
            """INSERT INTO drift_events (workflow_id, plc_id, vendor, metric, magnitude_sigma,
                   window_mean, baseline_mean, baseline_std, detected_at, text)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
               ON CONFLICT (workflow_id, detected_at) DO UPDATE SET text = EXCLUDED.text
               RETURNING id""",
            req.workflow_id,
            a.plc_id,
            a.vendor,
            a.metric,
            a.sigma,
            a.window_mean,
            a.baseline_mean,
            a.baseline_std,
            a.detected_at,
            text,
        )
        if self._memory is not None:
            try:
                await self._memory.store_embedding(event_id, text)
            except EmbeddingModelError as exc:
                # The event is recorded either way: a missing model must not hold up the
                # safety response; triage embeds it on demand once the model is back.
                log.warning("event %s stored without embedding: %s", event_id, exc)
        return event_id
