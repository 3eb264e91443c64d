"""Drift events: the plant's memory of what drifted, and later what fixed it."""

from __future__ import annotations

import asyncpg
from temporalio import activity

from factorylm.models import RecordEventInput


class EventActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn(name="record_drift_event")
    async def record_drift_event(self, req: RecordEventInput) -> int:
        a = req.alert
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
            a.describe(),
        )
        return event_id
