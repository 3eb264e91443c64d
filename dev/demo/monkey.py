"""`factorylm demo --scenario monkey`: the Monkey works a small imported plan on a local Trello
with the offline provider (no LLM key is used, and every card comment says so)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from temporalio.worker import Worker

from dev.demo.environment import Demo
from dev.fakes.server import LocalServer
from dev.fakes.trello import FakeTrello
from factorylm.models.monkey import BACKLOG, CURRENT_SPRINT, LISTS, MonkeyInput
from factorylm.settings import PROJECT_ROOT, Settings
from factorylm.trello.board import TrelloBoard
from factorylm.trello.plan import load_plan
from workers.agents import monkey_activities
from workflows.monkey import MonkeyWorkflow

DEMO_PLAN = PROJECT_ROOT / "config" / "monkey-demo-plan.md"


def _board(settings: Settings, plan_cards: int) -> TrelloBoard:
    board = TrelloBoard.create(settings, "FactoryLM demo sprint")
    board.ensure_structure()
    added, _ = board.import_plan(load_plan(DEMO_PLAN))
    assert len(added) == plan_cards
    # The engineer's part: pull the whole backlog into the sprint.
    for card in board.cards(BACKLOG):
        board.move(card.id, CURRENT_SPRINT)
    return board


async def run_monkey_scenario(demo: Demo, say: Callable[[str], None]) -> dict[str, Any]:
    assert demo.client is not None and demo.stack is not None and demo.stack.pool is not None
    pool, client = demo.stack.pool, demo.client
    trello = FakeTrello()
    server = LocalServer(trello.app())
    await server.start()
    try:
        settings = Settings.model_validate(
            demo.settings.model_copy(
                update={
                    "trello_api_key": trello.api_key,
                    "trello_token": trello.token,
                    "trello_app_secret": trello.app_secret,
                    "trello_base_url": server.url,
                    # The demo shows the offline provider whatever keys the shell has.
                    "anthropic_api_key": None,
                    "gemini_api_key": None,
                    "task_queue": f"{demo.settings.task_queue}-monkey-demo",
                    # The demo database is shared with other scenarios' LLM calls: the demo
                    # budgets the Monkey's own tokens only, 50 000 a day as in the plan.
                    "budget_hourly_tokens": 0,
                    "budget_daily_tokens": 0,
                    "budget_agent_daily_tokens": {"monkey": 50_000},
                }
            ).model_dump()
        )
        say(f"Trello through py-trello against a local Trello API on {server.url}")
        plan = load_plan(DEMO_PLAN)
        board = await asyncio.to_thread(_board, settings, len(plan))
        say(f"board {board.board_id}: {len(plan)} cards imported from {DEMO_PLAN.name} and "
            f"moved to {CURRENT_SPRINT}; no LLM key: the offline provider answers")  # fmt: skip
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[MonkeyWorkflow],
            activities=monkey_activities(pool, settings),
        )
        async with worker:
            handle = await client.start_workflow(
                MonkeyWorkflow.run,
                MonkeyInput(
                    board_id=board.board_id,
                    recipients=list(settings.approvers),
                    stop_when_idle=True,
                    continue_after_cycles=3,
                ),
                id=f"monkey-demo-{uuid.uuid4().hex[:8]}",
                task_queue=settings.task_queue,
            )
            say(f"MonkeyWorkflow {handle.id} started")
            summary = await asyncio.wait_for(handle.result(), timeout=180)
        for name in LISTS:
            for card in trello.cards_in(board.board_id, name):
                if name != BACKLOG:
                    say(f"  {name:15} {card['name']}")
        say(f"the Monkey finished in {summary.runs} run(s) (continue-as-new every 3 cycles)")
        return {
            "status": "completed" if summary.status == "idle" else summary.status,
            "cards_done": summary.cards_done,
            "cards_blocked": summary.cards_blocked,
            "human_alerts": summary.human_alerts,
            "tokens_used": summary.tokens_used,
            "budget_refusals": summary.budget_refusals,
        }
    finally:
        await server.stop()
