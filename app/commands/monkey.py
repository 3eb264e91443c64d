"""`factorylm trello init|import` and `factorylm monkey start|pause|resume|stop|status`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from app.commands import Command, SubParsers
from factorylm.settings import Settings


def add_parsers(sub: SubParsers) -> None:
    trello = sub.add_parser("trello", help="set up the Monkey's Trello board, import a plan")
    actions = trello.add_subparsers(dest="trello_action", required=True)
    init = actions.add_parser(
        "init",
        help="make sure the board has the Monkey's lists and labels (creates the board "
        "when FACTORYLM_TRELLO_BOARD_ID is empty)",
    )
    init.add_argument("--name", default="FactoryLM - Monkey", help="name for a new board")
    imp = actions.add_parser("import", help="create a plan's cards (YAML or Markdown) in Backlog")
    imp.add_argument("plan", type=Path)
    monkey = sub.add_parser("monkey", help="start, pause, resume, stop the Monkey; its status")
    monkey.add_argument("monkey_action", choices=["start", "pause", "resume", "stop", "status"])


def run(settings: Settings, args: argparse.Namespace) -> int:
    from factorylm.trello.board import TrelloError
    from factorylm.trello.plan import PlanError

    try:
        if args.command == "trello":
            return _trello(settings, args)
        return asyncio.run(_monkey(settings, args.monkey_action))
    except (TrelloError, PlanError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _trello(settings: Settings, args: argparse.Namespace) -> int:
    from factorylm.trello.board import TrelloBoard
    from factorylm.trello.plan import load_plan

    if args.trello_action == "init":
        if settings.trello_board_id:
            board = TrelloBoard.from_settings(settings)
        else:
            board = TrelloBoard.create(settings, args.name)
            print(f"created board {args.name!r}: set FACTORYLM_TRELLO_BOARD_ID={board.board_id}")
        setup = board.ensure_structure()
        print(
            f"board {setup.board_id}: lists added {setup.lists_added or 'none'}, "
            f"labels added {setup.labels_added or 'none'}"
        )
        return 0
    cards = load_plan(args.plan)
    board = TrelloBoard.from_settings(settings)
    board.ensure_structure()
    added, skipped = board.import_plan(cards)
    print(f"{len(added)} card(s) added to Backlog, {len(skipped)} already on the board")
    for name in skipped:
        print(f"  skipped (exists): {name}")
    return 0


async def _monkey(settings: Settings, action: str) -> int:
    from temporalio.common import WorkflowIDConflictPolicy

    from factorylm.models.monkey import MonkeyInput, MonkeyStatus
    from factorylm.temporal_client import connect
    from workflows.monkey import MonkeyWorkflow

    client = await connect(settings)
    workflow_id = settings.monkey_workflow_id
    if action == "start":
        if not settings.trello_board_id:
            print(
                "error: set FACTORYLM_TRELLO_BOARD_ID first (factorylm trello init)",
                file=sys.stderr,
            )
            return 1
        await client.start_workflow(
            MonkeyWorkflow.run,
            MonkeyInput(
                board_id=settings.trello_board_id,
                recipients=list(settings.approvers),
                idle_poll_s=settings.monkey_idle_poll_s,
            ),
            id=workflow_id,
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        print(f"the Monkey runs as workflow {workflow_id} (a running one is kept)")
        return 0
    handle = client.get_workflow_handle(workflow_id)
    if action == "status":
        status: MonkeyStatus = await handle.query(MonkeyWorkflow.status)
        print(json.dumps(status.model_dump(mode="json")))
        return 0
    await handle.signal(action)
    print(f"sent {action} to {workflow_id}")
    return 0


COMMAND = Command(names=("trello", "monkey"), add_parsers=add_parsers, run=run)
