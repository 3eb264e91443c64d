"""`factorylm manuals add|search|list` and `factorylm outcome EVENT_ID "TEXT"`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from app.commands import Command, SubParsers
from factorylm.settings import Settings


def add_parsers(sub: SubParsers) -> None:
    manuals = sub.add_parser("manuals", help="equipment manuals for the Manual Hunter")
    msub = manuals.add_subparsers(dest="manuals_action", required=True)
    add = msub.add_parser("add", help="ingest PDF, Markdown or text manuals (replaces by name)")
    add.add_argument("files", nargs="+", type=Path)
    search = msub.add_parser("search", help="the excerpts that answer a question, with citations")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=3)
    msub.add_parser("list", help="the ingested manuals")
    outcome = sub.add_parser(
        "outcome", help="record what the technician found for a drift event (feeds the memory)"
    )
    outcome.add_argument("event_id", type=int)
    outcome.add_argument("text", help='e.g. "fixed bearing" or "false alarm"')


async def _manuals(settings: Settings, args: argparse.Namespace) -> int:
    from factorylm.db.pool import create_pool, prepare_database
    from factorylm.embeddings import EmbeddingModelError, get_embedder
    from factorylm.manuals import ManualError, ManualStore

    await prepare_database(settings)
    pool = await create_pool(settings, max_size=2)
    store = ManualStore(pool, get_embedder(settings), ef_search=settings.memory_ef_search)
    failed = 0
    try:
        if args.manuals_action == "add":
            for path in args.files:
                try:
                    m = await store.add(path)
                except (ManualError, EmbeddingModelError) as exc:
                    print(f"error: {exc}; nothing was stored for it", file=sys.stderr)
                    failed += 1
                    continue
                verb = "replaced" if m.replaced else "added"
                print(f"{verb} {m.source}: {m.title!r}, {m.pages} page(s), {m.chunks} chunk(s)")
        elif args.manuals_action == "search":
            for e in await store.search(args.query, k=args.k):
                print(f"[{e.citation}] ({e.similarity * 100:.0f} %) {e.text}")
        else:
            for r in await store.manuals():
                print(
                    f"{r['source']}: {r['title']!r} ({r['media_type']}, {r['chunk_count']} chunks)"
                )
    finally:
        await pool.close()
    return 1 if failed else 0


async def _outcome(settings: Settings, args: argparse.Namespace) -> int:
    from activities.agents.outcomes import record_outcome
    from factorylm.db.pool import create_pool, prepare_database
    from factorylm.llm import build_router
    from factorylm.memory import vector_memory
    from factorylm.models.agents import RecordOutcomeInput

    await prepare_database(settings)
    pool = await create_pool(settings, max_size=2)
    try:
        record = await record_outcome(
            vector_memory(pool, settings),
            build_router(settings, pool),
            RecordOutcomeInput(event_id=args.event_id, text=args.text),
        )
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await pool.close()
    action = f", action {record.action_taken}" if record.action_taken else ""
    print(f"event {record.event_id}: {record.kind.value}{action} ({record.generated_by})")
    return 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "manuals":
        return asyncio.run(_manuals(settings, args))
    return asyncio.run(_outcome(settings, args))


COMMAND = Command(names=("manuals", "outcome"), add_parsers=add_parsers, run=run)
