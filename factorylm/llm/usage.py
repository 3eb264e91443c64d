"""Every LLM call, answered or failed, is one row in llm_usage: the token budget reads it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from factorylm.llm.pricing import cost_usd, price_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UsageRow:
    agent: str
    workflow_id: str | None
    activity: str | None
    provider: str
    model: str
    purpose: str
    input_tokens: int
    output_tokens: int
    latency_ms: float | None
    ok: bool
    error: str | None = None

    @property
    def cost_usd(self) -> float:
        return cost_usd(self.model, self.input_tokens, self.output_tokens)


class UsageRecorder:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, row: UsageRow) -> None:
        if row.provider != "offline" and price_for(row.model) is None:
            log.warning("no price for model %s: its cost is recorded as 0", row.model)
        try:
            await self._pool.execute(
                """INSERT INTO llm_usage (agent, workflow_id, activity, provider, model, purpose,
                       input_tokens, output_tokens, cost_usd, latency_ms, ok, error)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
                row.agent,
                row.workflow_id,
                row.activity,
                row.provider,
                row.model,
                row.purpose,
                row.input_tokens,
                row.output_tokens,
                row.cost_usd,
                row.latency_ms,
                row.ok,
                row.error[:2000] if row.error else None,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            # The answer is already paid for; losing its accounting row must not lose it too.
            log.error("could not record LLM usage %s: %s", row, exc)
