"""The Monkey's reservation cannot be gamed by a card's own estimate: it is the larger of the
estimate and the p90 of what past cards really cost (every attempt), against the real ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from temporalio.exceptions import ApplicationError

from activities.budget import BudgetActivities
from factorylm.models.monkey import BUDGET_EXCEEDED, BudgetRefusal, CheckBudgetInput
from factorylm.settings import Settings

CLEAN = "DELETE FROM llm_usage; DELETE FROM budget_refusals; DELETE FROM monkey_runs"


@pytest.fixture
async def clean(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    await pool.execute(CLEAN)
    yield pool
    await pool.execute(CLEAN)


async def past_card(pool: asyncpg.Pool, card: str, *attempts: int) -> None:
    for number, tokens in enumerate(attempts, start=1):
        await pool.execute(
            """INSERT INTO monkey_runs (run_key, workflow_id, card_id, card_name, attempt, passed,
                   generated_by, summary, check_report, input_tokens, output_tokens, started_at,
                   status)
               VALUES ($1, 'monkey', $2, $2, $3, false, 'anthropic x', '', '', $4, $5, now(),
                       'failed')""",
            f"monkey/{card}/{number}",
            card,
            number,
            tokens - tokens // 4,
            tokens // 4,
        )


def budget(settings: Settings, pool: asyncpg.Pool, daily: int) -> BudgetActivities:
    limited = settings.model_copy(
        update={"budget_hourly_tokens": 0, "budget_daily_tokens": daily, "approvers": []}
    )
    return BudgetActivities(pool, limited)


async def test_an_estimate_of_one_reserves_what_past_cards_really_cost(
    clean: asyncpg.Pool, settings: Settings
) -> None:
    # Nine cheap cards and one that took two expensive attempts: p90 sits near the top.
    for n in range(9):
        await past_card(clean, f"cheap-{n}", 1000)
    await past_card(clean, "dear", 6000, 6000)
    gate = budget(settings, clean, daily=100_000)
    expected = await clean.fetchval(
        """SELECT round(percentile_cont(0.9) WITHIN GROUP (ORDER BY s)) FROM (
               SELECT sum(input_tokens + output_tokens) AS s FROM monkey_runs GROUP BY card_id
           ) x"""
    )
    assert 2000 < expected < 12_000
    check = await gate.check(CheckBudgetInput(requested_tokens=1, reserve_observed=True))
    assert check.reserved_tokens == expected
    # Without the observation, the estimate is all (the old, gameable gate).
    assert (await gate.check(CheckBudgetInput(requested_tokens=1))).reserved_tokens == 1
    # A larger estimate wins over the observation.
    big = await gate.check(CheckBudgetInput(requested_tokens=50_000, reserve_observed=True))
    assert big.reserved_tokens == 50_000


async def test_a_reservation_that_does_not_fit_is_refused(
    clean: asyncpg.Pool, settings: Settings
) -> None:
    await past_card(clean, "past", 8000)
    gate = budget(settings, clean, daily=20_000)
    await clean.execute(
        """INSERT INTO llm_usage (agent, provider, model, input_tokens, output_tokens, ok)
           VALUES ('weaver', 'anthropic', 'claude', 10000, 3000, true)"""
    )
    with pytest.raises(ApplicationError) as refused:
        await gate.check(
            CheckBudgetInput(requested_tokens=1, work_ref="card-1", reserve_observed=True)
        )
    assert refused.value.type == BUDGET_EXCEEDED
    refusal = BudgetRefusal.model_validate(refused.value.details[0])
    assert refusal.requested_tokens == 8000 and not refusal.never_fits
    row = await clean.fetchrow("SELECT work_ref, requested_tokens FROM budget_refusals")
    assert (row["work_ref"], row["requested_tokens"]) == ("card-1", 8000)
