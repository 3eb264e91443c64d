"""The token budget over real llm_usage rows: per window and per agent, the refusal (typed,
non-retryable), the 80 % WhatsApp alert once per window, and GET /budget."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError

from activities.budget import BudgetActivities
from dev.fakes.server import LocalServer
from dev.fakes.twilio import FakeTwilio
from factorylm.budget import BudgetLedger, Limits
from factorylm.models.monkey import BUDGET_EXCEEDED, BudgetRefusal, CheckBudgetInput
from factorylm.settings import Settings, reveal
from helpers import free_port

ENGINEER = "whatsapp:+15550100001"
# Budget windows are real clock windows: each test starts from an empty day, alerts unsent.
CLEAN = """DELETE FROM llm_usage; DELETE FROM budget_refusals;
           DELETE FROM notifications WHERE dedup_key LIKE 'budget/%';
           DELETE FROM outbound_messages WHERE idem_key LIKE 'budget/%'"""


async def spend(pool: asyncpg.Pool, agent: str, tokens: int, at: datetime | None = None) -> None:
    await pool.execute(
        """INSERT INTO llm_usage (at, agent, provider, model, input_tokens, output_tokens,
               cost_usd, ok) VALUES ($1, $2, 'anthropic', 'claude-sonnet-4-6', $3, $4, $5, true)""",
        at or datetime.now(UTC),
        agent,
        tokens // 2,
        tokens - tokens // 2,
        tokens / 1e5,
    )


@pytest.fixture
async def clean(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    # The ledger reads every agent's usage: each test starts from an empty day.
    await pool.execute(CLEAN)
    yield pool
    await pool.execute(CLEAN)


@pytest.fixture
async def twilio(settings: Settings) -> AsyncIterator[tuple[FakeTwilio, Settings]]:
    fake = FakeTwilio()
    server = LocalServer(fake.app())
    await server.start()
    s = settings.model_copy(
        update={
            "twilio_account_sid": fake.account_sid,
            "twilio_auth_token": SecretStr(fake.auth_token),
            "twilio_api_base_url": server.url,
            "approvers": [ENGINEER],
            "budget_hourly_tokens": 0,
            "budget_daily_tokens": 10_000,
            "budget_agent_daily_tokens": {"monkey": 6_000},
        }
    )
    yield fake, s
    await server.stop()


async def test_usage_per_window_and_agent(clean: asyncpg.Pool) -> None:
    pool = clean
    now = datetime.now(UTC)
    await spend(pool, "monkey", 1_000)
    await spend(pool, "weaver", 400)
    await spend(pool, "monkey", 5_000, at=now - timedelta(days=2))  # another day: not counted
    ledger = BudgetLedger(pool, Limits(hourly=2_000, daily=50_000, agent_daily={"monkey": 3_000}))
    status = await ledger.status()
    assert status.day.used_tokens == 1_400 and status.hour.used_tokens == 1_400
    assert status.agents["monkey"]["day"].used_tokens == 1_000
    assert status.agents["weaver"]["hour"].used_tokens == 400
    body = status.as_json()
    assert body["windows"]["day"]["limit_tokens"] == 50_000
    assert body["windows"]["hour"]["remaining_tokens"] == 600
    assert body["agents"]["monkey"]["day"]["limit_tokens"] == 3_000
    assert "projected_exhaustion" in body


async def test_refusal_is_typed_and_alert_goes_out_once(
    clean: asyncpg.Pool, twilio: tuple[FakeTwilio, Settings]
) -> None:
    fake, s = twilio
    pool = clean
    budget = BudgetActivities(pool, s)
    check = await budget.check(CheckBudgetInput(requested_tokens=1_000, work_ref="c1"))
    assert check.remaining_tokens == 5_000 and check.alerts_sent == 0
    await spend(pool, "monkey", 5_000)  # 83 % of the Monkey's own daily limit
    first = await budget.check(CheckBudgetInput(requested_tokens=500, work_ref="c2"))
    assert first.alerts_sent == 1
    (alert,) = fake.to(ENGINEER)
    assert "83 % of the monkey's daily budget" in alert.body and "GET /budget" in alert.body
    again = await budget.check(CheckBudgetInput(requested_tokens=500, work_ref="c3"))
    assert again.alerts_sent == 0 and len(fake.to(ENGINEER)) == 1  # once per window
    with pytest.raises(ApplicationError) as refused:
        await budget.check(CheckBudgetInput(requested_tokens=2_000, work_ref="c4"))
    error = refused.value
    assert error.type == BUDGET_EXCEEDED and error.non_retryable
    refusal = BudgetRefusal.model_validate(error.details[0])
    assert refusal.window == "agent-day" and not refusal.never_fits
    assert refusal.retry_at > datetime.now(UTC)
    with pytest.raises(ApplicationError) as too_big:
        await budget.check(CheckBudgetInput(requested_tokens=20_000, work_ref="c5"))
    assert BudgetRefusal.model_validate(too_big.value.details[0]).never_fits
    assert await pool.fetchval("SELECT count(*) FROM budget_refusals") == 2
    # The totals alert separately when they pass 80 % too.
    await spend(pool, "weaver", 3_500)
    totals = await budget.check(CheckBudgetInput(requested_tokens=100))
    assert totals.alerts_sent == 1
    assert any("of the daily budget" in m.body for m in fake.to(ENGINEER))


async def test_get_budget(clean: asyncpg.Pool, settings: Settings) -> None:
    from temporalio.client import Client

    from api.app import create_app

    await spend(clean, "monkey", 1_200)
    s = settings.model_copy(update={"budget_daily_tokens": 4_000, "budget_hourly_tokens": 2_000})
    client = await Client.connect(s.temporal_address, namespace=s.temporal_namespace)
    server = LocalServer(create_app(s, client, clean), port=free_port())
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/budget")).status_code == 401
            response = await http.get(
                "/budget", headers={"authorization": f"Bearer {reveal(s.api_token)}"}
            )
    finally:
        await server.stop()
    assert response.status_code == 200
    body = response.json()
    assert body["windows"]["day"] == body["windows"]["day"] | {
        "used_tokens": 1_200,
        "limit_tokens": 4_000,
        "remaining_tokens": 2_800,
        "percent": 30.0,
    }
    assert body["windows"]["hour"]["limit_tokens"] == 2_000
    assert body["agents"]["monkey"]["day"]["used_tokens"] == 1_200
    assert body["refusals_today"] == 0
