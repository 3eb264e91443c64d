"""Rollups and retention of raw samples (migration 0022 holds the SQL that does the work).

The activities call the owner's SECURITY DEFINER functions: the agents worker cannot drop a
chunk by itself, and the functions refuse to drop less than a day or anything not rolled up.
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from temporalio import activity

from factorylm.models.lifecycle import DropRawInput, RollUpInput, RollUpResult


class LifecycleActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn
    async def roll_up_samples(self, req: RollUpInput) -> RollUpResult:
        """Rolls up to `until` in steps of at most `span_hours`, heartbeating after each, so a
        retried attempt resumes from the watermark the previous one left."""
        steps = 0
        previous = None
        async with self._pool.acquire() as conn:
            while True:
                watermark = await conn.fetchval(
                    "SELECT factorylm_roll_up_samples($1, $2, $3)",
                    req.until,
                    timedelta(minutes=req.lookback_minutes),
                    timedelta(hours=req.span_hours),
                )
                steps += 1
                activity.heartbeat(str(watermark))
                # Done: nothing sampled, caught up to `until` (less the open minute), or no
                # progress (every minute up to now is rolled).
                if watermark is None or watermark == previous or watermark >= req.until:
                    return RollUpResult(rolled_up_to=watermark, steps=steps)
                previous = watermark

    @activity.defn
    async def drop_raw_samples(self, req: DropRawInput) -> int:
        async with self._pool.acquire() as conn:
            dropped: int = await conn.fetchval(
                "SELECT factorylm_drop_raw_samples($1, $2)",
                timedelta(days=req.raw_retention_days),
                timedelta(minutes=req.lookback_minutes),
            )
        return dropped
