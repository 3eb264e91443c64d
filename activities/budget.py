"""The budget gate before new LLM work, and the 80 % alert (once per window)."""

from __future__ import annotations

import logging

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.notify import NotifyActivities
from factorylm.budget import BudgetLedger, BudgetStatus, Limits, WindowUsage, first_exceeded
from factorylm.models.messages import SendMessageInput
from factorylm.models.monkey import (
    BUDGET_EXCEEDED,
    MONKEY_AGENT,
    BudgetCheck,
    BudgetRefusal,
    CheckBudgetInput,
)
from factorylm.settings import Settings

log = logging.getLogger(__name__)


def _label(window: WindowUsage) -> str:
    if window.agent:
        return f"{window.agent}'s daily"
    return "hourly" if window.window == "hour" else "daily"


class BudgetActivities:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._settings = settings
        self._pool = pool
        self.ledger = BudgetLedger(pool, Limits.from_settings(settings))
        self._notify = NotifyActivities(pool, settings)

    async def alert_if_high(self, status: BudgetStatus, agent: str) -> int:
        """WhatsApp the approvers when a window passes the alert fraction; the dedup key holds
        the window's start, so each window alerts once however often it is checked."""
        sent = 0
        for window in status.windows_for(agent):
            if not window.limit_tokens or window.fraction < self.ledger.limits.alert_fraction:
                continue
            projected = window.projected_exhaustion(status.at)
            body = (
                f"FactoryLM token budget: {round(100 * window.fraction)} % of the "
                f"{_label(window)} budget used ({window.used_tokens:,} of "
                f"{window.limit_tokens:,} tokens, ${window.cost_usd:.2f}). "
                + (f"At this rate it runs out at {projected:%H:%M} UTC. " if projected else "")
                + f"New LLM work stops at 100 % until {window.end:%H:%M} UTC "
                f"({window.end:%Y-%m-%d}). See GET /budget."
            )
            key = f"budget/{window.window}/{window.agent or 'all'}/{window.start.isoformat()}"
            sent += await self._notify.send_message(
                SendMessageInput(dedup_key=key, recipients=self._settings.approvers, body=body)
            )
        return sent

    async def observed_p90(self, agent: str) -> int:
        """The 90th percentile of what the agent's last 50 cards really cost (every attempt,
        prompt, answer and repair), 0 before any card has been worked."""
        value = await self._pool.fetchval(
            """SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY spend) FROM (
                   SELECT sum(input_tokens + output_tokens) AS spend FROM monkey_runs
                   WHERE status <> 'no_provider'
                   GROUP BY workflow_id, card_id ORDER BY max(finished_at) DESC LIMIT 50
               ) AS cards""",
        )
        return round(float(value)) if value is not None and agent == MONKEY_AGENT else 0

    async def check(self, req: CheckBudgetInput) -> BudgetCheck:
        """Raise BudgetExceeded (non-retryable) when the work's reservation does not fit:
        its estimate, or with `reserve_observed` the larger of that and past cards' p90."""
        if req.reserve_observed:
            observed = await self.observed_p90(req.agent)
            req = req.model_copy(update={"requested_tokens": max(req.requested_tokens, observed)})
        status = await self.ledger.status()
        alerts = await self.alert_if_high(status, req.agent)
        windows = status.windows_for(req.agent)
        over = first_exceeded(windows, req.requested_tokens)
        too_small = [w for w in windows if w.limit_tokens and req.requested_tokens > w.limit_tokens]
        if over is not None and too_small:
            # Name the window the work can never fit in, not the one that happens to be full.
            over = min(too_small, key=lambda w: w.limit_tokens)
        if over is not None:
            await self.ledger.record_refusal(req.agent, req.work_ref, over, req.requested_tokens)
            refusal = BudgetRefusal(
                window=over.window,
                used_tokens=over.used_tokens,
                limit_tokens=over.limit_tokens,
                requested_tokens=req.requested_tokens,
                retry_at=over.end,
                never_fits=bool(too_small),
            )
            raise ApplicationError(
                f"{_label(over)} token budget: {over.used_tokens:,} of {over.limit_tokens:,} "
                f"used, this work needs about {req.requested_tokens:,}; "
                + (
                    "it is larger than the whole budget: split the card or raise the limit"
                    if refusal.never_fits
                    else f"next window opens {over.end:%Y-%m-%d %H:%M} UTC"
                ),
                refusal.model_dump(mode="json"),
                type=BUDGET_EXCEEDED,
                non_retryable=True,
                # An expected refusal, not a fault: the worker logs it quietly.
                category=ApplicationErrorCategory.BENIGN,
            )
        remaining = [w.remaining_tokens for w in windows if w.remaining_tokens is not None]
        return BudgetCheck(
            remaining_tokens=min(remaining) - req.requested_tokens if remaining else None,
            alerts_sent=alerts,
            reserved_tokens=req.requested_tokens,
        )

    @activity.defn(name="check_budget")
    async def check_budget(self, req: CheckBudgetInput) -> BudgetCheck:
        return await self.check(req)
