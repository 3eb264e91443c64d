"""Rollups and retention of raw samples (migrations 0022 and 0025 hold the SQL that does the
work).

The activities call the owner's SECURITY DEFINER functions: the agents worker cannot drop a
chunk by itself, and the functions refuse to drop less than a day or anything not rolled up.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import asyncpg
from temporalio import activity

from factorylm.models.lifecycle import DropRawInput, RollUpInput, RollUpResult

log = logging.getLogger(__name__)


class LifecycleActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn
    async def roll_up_samples(self, req: RollUpInput) -> RollUpResult:
        """Rolls up to `until` in steps of at most `span_hours`, heartbeating after each, so a
        retried attempt resumes from the watermark the previous one left. Minutes the ingest
        said received late samples (data_lifecycle.reroll_from, migration 0025) are re-rolled
        first, in steps of the same size."""
        steps = 0
        async with self._pool.acquire() as conn:
            oldest_pending, minutes_before = await self._state(conn)
            previous: tuple[datetime | None, datetime | None] | None = None
            while True:
                watermark: datetime | None = await conn.fetchval(
                    "SELECT factorylm_roll_up_samples($1, $2, $3)",
                    req.until,
                    timedelta(minutes=req.lookback_minutes),
                    timedelta(hours=req.span_hours),
                )
                pending, minutes = await self._state(conn)
                steps += 1
                activity.heartbeat(f"{watermark} re-roll from {pending}")
                if pending is not None and (oldest_pending is None or pending < oldest_pending):
                    oldest_pending = pending
                # Done: nothing left to re-roll and nothing sampled, or caught up to `until`
                # (less the open minute); or nothing moved (every minute up to now is rolled).
                # Each call moves the re-roll point forward or the watermark, so this ends.
                caught_up = watermark is None or watermark >= req.until
                if (pending is None and caught_up) or (watermark, pending) == previous:
                    rerolled = minutes - minutes_before
                    if rerolled:
                        log.info(
                            "re-rolled %d minutes from %s for samples that arrived late",
                            rerolled,
                            oldest_pending,
                        )
                    return RollUpResult(
                        rolled_up_to=watermark,
                        steps=steps,
                        rerolled_from=oldest_pending if rerolled else None,
                        rerolled_minutes=rerolled,
                    )
                previous = (watermark, pending)

    @staticmethod
    async def _state(conn: asyncpg.Connection) -> tuple[datetime | None, int]:
        row = await conn.fetchrow("SELECT reroll_from, rerolled_minutes FROM data_lifecycle")
        assert row is not None  # migration 0022 inserts the one row
        return row["reroll_from"], row["rerolled_minutes"]

    @activity.defn
    async def drop_raw_samples(self, req: DropRawInput) -> int:
        async with self._pool.acquire() as conn:
            dropped: int = await conn.fetchval(
                "SELECT factorylm_drop_raw_samples($1, $2)",
                timedelta(days=req.raw_retention_days),
                timedelta(minutes=req.lookback_minutes),
            )
        return dropped
