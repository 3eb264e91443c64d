"""The product's own processes and the embedded default's parts: `db`, `temporal`, `doctor`,
`probe`, `worker`, `ingest`, `api`, `serve`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from app.commands import Command, SubParsers
from factorylm.plant import Plant, PlantConfigError
from factorylm.settings import Settings

API_NICE = 5  # niceness the API process adds to its own when it runs alone (`factorylm api`)


def _db(settings: Settings, action: str) -> int:
    from app.pgcluster import Cluster, ClusterError
    from factorylm.db.pool import prepare_database

    if action == "migrate":
        return _migrate(settings)
    cluster = Cluster.from_settings(settings)
    try:
        if action == "start":
            started = cluster.start()
            asyncio.run(prepare_database(settings))
            print(
                f"PostgreSQL {'started' if started else 'already running'} on "
                f"{settings.pg_host}:{settings.pg_port}, database {settings.pg_database} migrated"
            )
        elif action == "stop":
            print("PostgreSQL stopped" if cluster.stop() else "PostgreSQL was not running")
        else:
            print("running" if cluster.running() else "stopped")
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _migrate(settings: Settings) -> int:
    """Apply pending migrations and converge the process roles' privileges, as the database
    owner, on the configured PostgreSQL (not the embedded cluster): production's one-shot."""
    import asyncpg

    from app.deployment import apply_grants
    from factorylm.db.pool import DatabaseUnavailable, prepare_database

    async def run() -> None:
        await prepare_database(settings)
        conn = await asyncpg.connect(settings.pg_dsn)
        try:
            await apply_grants(conn)
        finally:
            await conn.close()

    try:
        asyncio.run(run())
    except (DatabaseUnavailable, asyncpg.PostgresError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"database {settings.pg_database} migrated; process roles' privileges applied")
    return 0


def _temporal(settings: Settings, action: str) -> int:
    from temporal.devserver import DevServer, DevServerError

    server = DevServer(settings)
    try:
        if action == "start":
            started = server.start()
            print(
                f"Temporal {'started' if started else 'already running'} on "
                f"{settings.temporal_address}; Web UI {settings.temporal_ui_url}"
            )
        elif action == "stop":
            print("Temporal stopped" if server.stop() else "Temporal was not started by factorylm")
        else:
            print("running" if server.running() else "stopped")
    except DevServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _plant_for(settings: Settings, *, central: bool, site: str | None) -> tuple[Settings, Plant]:
    """The plant as this process serves it. The central processes (agents worker, API, the
    all-in-one `serve`) serve every site; an edge process (ingest, PLC-edge worker) serves one
    site: `--site`, FACTORYLM_SITE, or the plant's only one. Raises PlantConfigError naming
    the sites when none fits."""
    from factorylm.plant import load_plant
    from factorylm.roster import site_settings

    plant = load_plant(settings.plant_file)
    if central:
        return settings, plant
    own = plant.for_site(site or settings.site or plant.only_site.name)
    return site_settings(settings, own.only_site).model_copy(
        update={"site": own.only_site.name}
    ), own


async def _serve(
    settings: Settings, plant: Plant, *, agents: bool, edge: bool, ingest: bool, api: bool
) -> None:
    from app.stack import Stack
    from factorylm.temporal_client import connect

    client = await connect(settings)
    stack = Stack(
        settings,
        plant,
        client,
        run_agents_worker=agents,
        run_edge_worker=edge,
        run_ingest=ingest,
        run_api=api,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stack.start()
    try:
        await stop.wait()
    finally:
        await stack.stop()


def _doctor(settings: Settings) -> int:
    from app.doctor import report, run_checks

    text, code = report(asyncio.run(run_checks(settings)))
    print(text)
    return code


def add_parsers(sub: SubParsers) -> None:
    db = sub.add_parser(
        "db",
        help="start, stop or check the embedded PostgreSQL cluster; migrate: apply migrations "
        "and the process roles' privileges to the configured PostgreSQL, as its owner",
    )
    db.add_argument("action", choices=["start", "stop", "status", "migrate"])
    p = sub.add_parser("temporal", help="start, stop or check the Temporal dev server")
    p.add_argument("action", choices=["start", "stop", "status"])
    sub.add_parser("doctor", help="check every part and say how to fix what is missing")
    sub.add_parser("probe", help="health check for containers: PostgreSQL and Temporal answer")
    worker = sub.add_parser("worker", help="run the Temporal workers")
    worker.add_argument(
        "--queue",
        choices=["agents", "plc-edge", "all"],
        default="all",
        help="agents: workflows and agent activities; plc-edge: PLC writes (run it where the "
        "PLCs are reachable); all: both (default)",
    )
    ingest = sub.add_parser(
        "ingest", help="run the ingest process (collectors, writer, drift detector)"
    )
    edge = sub.add_parser(
        "edge",
        help="run one site's edge node: its ingest and its PLC-edge worker, with only that "
        "site's PLCs, catalog and approvers (it needs its PLCs, PostgreSQL and Temporal)",
    )
    for p in (worker, ingest, edge):
        p.add_argument(
            "--site",
            default=None,
            help="the plant file's site this process serves (FACTORYLM_SITE; the plant's "
            "only site if unset); the agents worker and the API serve all sites",
        )
    sub.add_parser("api", help="run the HTTP API")
    sub.add_parser("serve", help="run workers, ingest and API in one process")


def run(settings: Settings, args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "db":
        return _db(settings, args.action)
    if cmd == "temporal":
        return _temporal(settings, args.action)
    if cmd == "doctor":
        return _doctor(settings)
    if cmd == "probe":
        from app.doctor import probe, report

        text, code = report(asyncio.run(probe(settings)))
        print(text)
        return code
    queue = getattr(args, "queue", "all")
    agents = cmd == "serve" or (cmd == "worker" and queue in ("agents", "all"))
    edge = cmd in ("serve", "edge") or (cmd == "worker" and queue in ("plc-edge", "all"))
    ingest = cmd in ("ingest", "serve", "edge")
    api = cmd in ("api", "serve")
    try:
        settings, plant = _plant_for(
            settings, central=agents or api, site=getattr(args, "site", None)
        )
    except PlantConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if api and not (agents or edge or ingest):
        # An API of its own yields the CPU to the collectors where they share a machine (the
        # embedded default, a small server): a board or a webhook may wait a millisecond, a
        # poll should not. Always allowed (raising priority would need root).
        os.nice(API_NICE)
    asyncio.run(_serve(settings, plant, agents=agents, edge=edge, ingest=ingest, api=api))
    return 0


COMMAND = Command(
    names=("db", "temporal", "doctor", "probe", "worker", "ingest", "edge", "api", "serve"),
    add_parsers=add_parsers,
    run=run,
)
