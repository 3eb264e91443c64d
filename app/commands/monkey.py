"""`factorylm trello init|import`, `factorylm monkey start|pause|resume|stop|status|map` and
`factorylm work-log` (the Workflow Tracker)."""

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
    monkey = sub.add_parser(
        "monkey", help="start, pause, resume, stop the Monkey; its status; its repository's map"
    )
    monkey.add_argument(
        "monkey_action", choices=["start", "pause", "resume", "stop", "status", "map"]
    )
    monkey.add_argument(
        "--card", default="", help="with map: rank the files relevant to this card text"
    )
    for p in (trello, monkey):
        p.add_argument(
            "--site",
            default=None,
            help="a site's own board (its `trello_board` in the plant file) and approvers; "
            "its Monkey runs as <FACTORYLM_MONKEY_WORKFLOW_ID>-<site>",
        )
    log = sub.add_parser("work-log", help="every agent's work (the Workflow Tracker)")
    log.add_argument("--agent", help="drift, photo, health, baseline, outcome, monkey")
    log.add_argument("--since", help="ISO 8601 time with a zone, e.g. 2026-12-01T00:00:00Z")
    log.add_argument("--until", help="ISO 8601 time with a zone")
    log.add_argument("--outcome", help="completed, failed, running, ... or passed, blocked")
    log.add_argument("--limit", type=int, default=50)
    log.add_argument("--json", action="store_true", help="one JSON object per line")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from factorylm.temporal_client import TemporalUnavailable
    from factorylm.trello.board import TrelloError
    from factorylm.trello.plan import PlanError
    from factorylm.worklog import WorkLogError

    if getattr(args, "site", None):
        found = _for_site(settings, args.site)
        if isinstance(found, str):
            print(f"error: {found}", file=sys.stderr)
            return 2
        settings = found
    try:
        if args.command == "trello":
            return _trello(settings, args)
        if args.command == "work-log":
            return asyncio.run(_work_log(settings, args))
        if args.monkey_action == "map":
            return asyncio.run(_map(settings, args.card))
        return asyncio.run(_monkey(settings, args.monkey_action))
    except (TrelloError, PlanError, WorkLogError, TemporalUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _for_site(settings: Settings, name: str) -> Settings | str:
    """The settings as one site's Monkey sees them: its board, its approvers, its own workflow
    id; or what is wrong."""
    from factorylm.plant import PlantConfigError, load_plant
    from factorylm.roster import site_settings

    try:
        site = load_plant(settings.plant_file).for_site(name).only_site
    except PlantConfigError as exc:
        return str(exc)
    if not site.trello_board:
        return f"site {name} has no trello_board in the plant file"
    return site_settings(settings, site).model_copy(
        update={
            "trello_board_id": site.trello_board,
            "monkey_workflow_id": f"{settings.monkey_workflow_id}-{site.name}",
        }
    )


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


async def _map(settings: Settings, card_text: str) -> int:
    from activities.monkey import cartographer_for, monkey_workspace
    from activities.monkey_workspace import GitError
    from factorylm.db.pool import create_pool
    from factorylm.models.monkey import MapRepositoryInput, SprintCard

    workspace = monkey_workspace(settings)
    try:
        await asyncio.to_thread(workspace.ensure_clone)
        commit = await asyncio.to_thread(workspace.base_commit)
    except GitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pool = await create_pool(settings, max_size=2)
    try:
        card = SprintCard(id="cli", name=card_text or "map", description="")
        context = await cartographer_for(pool, settings).map_repository(
            MapRepositoryInput(card=card, commit=commit)
        )
    finally:
        await pool.close()
    print(f"{workspace.shown} {settings.monkey_base_branch} at {commit} ({context.files} files"
          f"{', cached' if context.cached else ''})")  # fmt: skip
    print(context.map_text)
    if card_text:
        print(f"\nrelevant to {card_text!r}:")
        for item in context.relevant:
            print(f"  {item.score:6.3f}  {item.path}  ({item.reason})")
    return 0


async def _work_log(settings: Settings, args: argparse.Namespace) -> int:
    from factorylm.db.pool import create_pool
    from factorylm.temporal_client import connect
    from factorylm.worklog import WorkFilter, parse_time, work_log

    f = WorkFilter(
        agent=args.agent,
        since=parse_time(args.since, "--since"),
        until=parse_time(args.until, "--until"),
        outcome=args.outcome,
        limit=args.limit,
    )
    client = await connect(settings)
    pool = await create_pool(settings, max_size=2)
    try:
        items = await work_log(client, pool, settings, f)
    finally:
        await pool.close()
    for item in items:
        if args.json:
            print(json.dumps(item.as_json()))
            continue
        print(
            f"{item.started_at:%Y-%m-%d %H:%M:%S}  {item.agent:8} {item.outcome:14} "
            f"{item.tokens:>7} tok ${item.cost_usd:.4f}  {item.what}\n    {item.history_url}"
        )
    if not args.json:
        print(f"{len(items)} item(s)")
    return 0


COMMAND = Command(names=("trello", "monkey", "work-log"), add_parsers=add_parsers, run=run)
