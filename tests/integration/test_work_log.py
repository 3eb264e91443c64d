"""The Workflow Tracker (GET /work-log, `factorylm work-log`) on the real Temporal server and
database: workflows from Temporal's visibility with their tokens from llm_usage, the Monkey's
cards from monkey_runs, filtered by agent, time and outcome, each linked to its history."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from api.app import create_app
from dev.fakes.server import LocalServer
from factorylm.api_tokens import Role, TokenStore
from factorylm.models.health import HealthMonitorInput
from factorylm.models.monkey import MonkeyReportInput
from factorylm.settings import Settings
from helpers import free_port, until
from workers.agents import monkey_activities
from workflows.health import HealthMonitorWorkflow
from workflows.monkey import MonkeyReportWorkflow


async def _card(
    pool: asyncpg.Pool, workflow_id: str, card: str, *attempts: tuple[str, int]
) -> None:
    for number, (status, tokens) in enumerate(attempts, start=1):
        await pool.execute(
            """INSERT INTO monkey_runs (run_key, workflow_id, card_id, card_name, attempt, passed,
                   generated_by, summary, check_report, input_tokens, output_tokens, cost_usd,
                   started_at, status, branch)
               VALUES ($1, $2, $3, $3, $4, $5, 'anthropic x', '', '', $6, 0, 0.01, now(), $7, $8)""",
            f"{workflow_id}/run-1/{card}/1/{number}",
            workflow_id,
            card,
            number,
            status == "passed",
            tokens,
            status,
            f"monkey/{card}-x",
        )


@pytest.fixture
async def api(
    settings: Settings, client: Client, pool: asyncpg.Pool
) -> AsyncIterator[httpx.AsyncClient]:
    server = LocalServer(create_app(settings, client, pool), port=free_port())
    await server.start()
    async with httpx.AsyncClient(base_url=server.url) as http:
        yield http
    await server.stop()


async def test_the_work_log_lists_every_agents_work_with_filters(
    settings: Settings, client: Client, pool: asyncpg.Pool, api: httpx.AsyncClient
) -> None:
    tag = uuid.uuid4().hex[:8]
    queue = f"work-log-{tag}"
    monkey_id = f"monkey-worklog-{tag}"
    await _card(pool, monkey_id, f"done-{tag}", ("failed", 700), ("passed", 500))
    await _card(pool, monkey_id, f"stuck-{tag}", ("failed", 300), ("failed", 200))
    s = Settings.model_validate(settings.model_copy(update={"task_queue": queue}).model_dump())
    report_id = f"monkey-report-{tag}"
    await pool.execute(
        """INSERT INTO llm_usage (agent, workflow_id, provider, model, input_tokens,
               output_tokens, cost_usd, ok) VALUES ('monkey', $1, 'anthropic', 'x', 40, 2, 0.5, true)""",
        report_id,
    )
    async with Worker(
        client, task_queue=queue, workflows=[MonkeyReportWorkflow],
        activities=monkey_activities(pool, s),
    ):  # fmt: skip
        await client.execute_workflow(
            MonkeyReportWorkflow.run,
            MonkeyReportInput(board_id="", recipients=[], report_key=""),
            id=report_id,
            task_queue=queue,
        )
    # A health check no worker picks up: still running.
    health_id = f"health-worklog-{tag}"
    await client.start_workflow(
        HealthMonitorWorkflow.run,
        HealthMonitorInput(task_queues=[], schedule_ids=[], recipients=[]),
        id=health_id,
        task_queue=f"{queue}-idle",
    )
    # The Workflow Tracker is for reading: a viewer's token is enough, an uploader's is not.
    tokens = TokenStore(pool)
    viewer = await tokens.add(f"viewer-{tag}", Role.VIEWER, approvers=[])
    uploader = await tokens.add(f"uploader-{tag}", Role.UPLOADER, approvers=[])
    auth = {"authorization": f"Bearer {viewer}"}

    async def items(**params: str) -> list[dict[str, Any]]:
        response = await api.get("/work-log", params={"limit": "1000", **params}, headers=auth)
        assert response.status_code == 200, response.text
        return [i for i in response.json()["items"] if tag in i["workflow_id"] or tag in i["what"]]

    everything = await until(
        "both workflows visible", lambda: _when(items(), lambda found: len(found) == 4)
    )
    by_what = {i["what"]: i for i in everything}
    report = by_what[f"MonkeyReportWorkflow {report_id}"]
    assert (report["agent"], report["outcome"], report["tokens"]) == ("monkey", "completed", 42)
    assert report["cost_usd"] == 0.5 and report["finished_at"] is not None
    assert report["history_url"].startswith(settings.temporal_ui_url)
    assert f"/workflows/{report_id}/" in report["history_url"]
    health = by_what[f"HealthMonitorWorkflow {health_id}"]
    assert (health["agent"], health["outcome"], health["finished_at"]) == (
        "health",
        "running",
        None,
    )
    done = next(i for i in everything if f"done-{tag}" in i["what"])
    assert (done["outcome"], done["tokens"], done["agent"]) == ("passed", 1200, "monkey")
    assert "2 attempt(s)" in done["what"] and done["workflow_id"] == monkey_id
    stuck = next(i for i in everything if f"stuck-{tag}" in i["what"])
    assert stuck["outcome"] == "blocked"
    # Filters: by agent, by outcome, by time.
    assert {i["agent"] for i in await items(agent="health")} == {"health"}
    assert [i["what"] for i in await items(outcome="blocked")] == [stuck["what"]]
    assert len(await items(agent="monkey")) == 3
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await items(since=future) == []
    assert len(await items(until=future)) == 4
    bad = await api.get("/work-log", params={"agent": "nobody"}, headers=auth)
    assert bad.status_code == 400 and "known: baseline" in bad.json()["error"]
    assert (await api.get("/work-log")).status_code == 401
    other = await api.get("/work-log", headers={"authorization": f"Bearer {uploader}"})
    assert other.status_code == 403
    await client.get_workflow_handle(health_id).terminate("test over")


async def _when(found: Any, ok: Any) -> Any:
    values = await found
    return values if ok(values) else None


def test_the_cli_prints_the_same_work_log(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import build_parser
    from app.commands.monkey import run

    tag = uuid.uuid4().hex[:8]

    async def seed() -> None:
        pool = await asyncpg.create_pool(settings.pg_dsn, min_size=1, max_size=1)
        try:
            await _card(pool, f"monkey-cli-{tag}", f"cli-{tag}", ("passed", 321))
        finally:
            await pool.close()

    asyncio.run(seed())
    args = build_parser().parse_args(["work-log", "--agent", "monkey", "--json", "--limit", "1000"])
    assert run(settings, args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (mine,) = [item for item in lines if tag in item["what"]]
    assert (mine["outcome"], mine["tokens"]) == ("passed", 321)
    refused = build_parser().parse_args(["work-log", "--outcome", "sideways"])
    assert run(settings, refused) == 1
    assert "unknown outcome 'sideways'" in capsys.readouterr().err
