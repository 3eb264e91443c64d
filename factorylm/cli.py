"""The `factorylm` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from factorylm.settings import Settings, SettingsError, load_settings

# `factorylm demo --scenario NAME`; the default stays the drift scenario. Add a name here and
# its branch in factorylm/demo.py `_run_named`.
DEMO_SCENARIOS = ("drift", "photo", "monkey", "health")


def _db(settings: Settings, action: str) -> int:
    from factorylm.db.pool import prepare_database
    from factorylm.pgcluster import Cluster, ClusterError

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


async def _serve(settings: Settings, *, agents: bool, edge: bool, ingest: bool, api: bool) -> None:
    from factorylm.plant import load_plant
    from factorylm.stack import Stack
    from factorylm.temporal_client import connect

    client = await connect(settings)
    stack = Stack(
        settings,
        load_plant(settings.plant_file),
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


async def _simulate(settings: Settings, control_port: int) -> None:
    from factorylm.plant import load_plant
    from factorylm.simulator.plant import PlantSimulator

    sim = PlantSimulator(load_plant(settings.plant_file), control_port=control_port)
    await sim.start()
    for peer in sim.peers.values():
        print(f"simulating {peer.plc.id} ({peer.protocol_label}) on {peer.address}", flush=True)
    print(f"fault control on {sim.control.url if sim.control else '-'}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.stop()


def _simulator_control(args: argparse.Namespace) -> int:
    """`simulate inject|clear|faults`: talk to the running simulator's control channel."""
    import json

    import httpx

    url = f"http://127.0.0.1:{args.control_port}/faults"
    try:
        if args.sim_action == "inject":
            body = {"plc": args.plc, "metric": args.metric, "kind": args.kind, "size": args.size}
            response = httpx.post(url, json=body, timeout=10)
        elif args.sim_action == "clear":
            params = {k: v for k, v in (("plc", args.plc), ("metric", args.metric)) if v}
            response = httpx.delete(url, params=params, timeout=10)
        else:
            response = httpx.get(url, timeout=10)
    except httpx.TransportError as exc:
        print(
            f"error: no simulator answers on {url} ({exc}); start it with `factorylm simulate`",
            file=sys.stderr,
        )
        return 1
    payload = response.json()
    if response.status_code != 200:
        print(f"error: {payload.get('error', response.text)}", file=sys.stderr)
        return 1
    print(json.dumps(payload["faults"]))
    return 0


def _doctor(settings: Settings) -> int:
    from factorylm.doctor import report, run_checks

    text, code = report(asyncio.run(run_checks(settings)))
    print(text)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="factorylm", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, what in (
        ("db", "the embedded PostgreSQL cluster"),
        ("temporal", "the Temporal dev server"),
    ):
        p = sub.add_parser(name, help=f"start, stop or check {what}")
        p.add_argument("action", choices=["start", "stop", "status"])
    demo = sub.add_parser("demo", help="run the product on its embedded default with a scenario")
    demo.add_argument("--once", action="store_true", help="run the scenario, tear down, print JSON")
    demo.add_argument("--scenario", choices=DEMO_SCENARIOS, default="drift", help="which scenario")
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
    sub.add_parser("ingest", help="run the ingest process (collectors, writer, drift detector)")
    sub.add_parser("api", help="run the HTTP API")
    sub.add_parser("serve", help="run workers, ingest and API in one process")
    simulate = sub.add_parser(
        "simulate", help="serve the plant file's PLCs from simulated protocol peers"
    )
    simulate.add_argument(
        "--control-port",
        type=int,
        default=15099,
        help="loopback port of the fault control channel (default 15099)",
    )
    sim_sub = simulate.add_subparsers(dest="sim_action")
    inject = sim_sub.add_parser("inject", help="inject a fault into the running simulator")
    inject.add_argument("--plc", required=True, help="PLC id from the plant file")
    inject.add_argument("--metric", help="metric name (not needed for --kind offline)")
    inject.add_argument(
        "--kind", required=True, choices=["step", "ramp", "stuck", "dropout", "offline"]
    )
    inject.add_argument("--size", default="0", help="size in baseline sigmas, e.g. 4sigma")
    clear = sim_sub.add_parser("clear", help="clear faults (all of a PLC's: back online too)")
    clear.add_argument("--plc", help="PLC id (default: every PLC)")
    clear.add_argument("--metric", help="only this metric's fault")
    faults = sim_sub.add_parser("faults", help="list the active faults")
    for control in (inject, clear, faults):
        control.add_argument("--control-port", type=int, default=argparse.SUPPRESS)
    from factorylm import cli_agents

    cli_agents.add_parsers(sub)
    from factorylm.trello import cli as trello_cli

    trello_cli.add_parsers(sub)
    bench = sub.add_parser("bench", help="run benchmarks; one JSON line each")
    bench.add_argument("name", nargs="?", default="all", help="a benchmark name, or all")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cmd = args.command
    from factorylm.tracing import setup_tracing

    setup_tracing(f"factorylm-{cmd}")
    if cmd == "db":
        return _db(settings, args.action)
    if cmd == "temporal":
        return _temporal(settings, args.action)
    if cmd == "doctor":
        return _doctor(settings)
    if cmd == "probe":
        from factorylm.doctor import probe, report

        text, code = report(asyncio.run(probe(settings)))
        print(text)
        return code
    if cmd == "demo":
        from factorylm import demo

        return demo.main(settings, once=args.once, scenario=args.scenario)
    if cmd in ("manuals", "outcome"):
        from factorylm import cli_agents

        return cli_agents.run(settings, args)
    if cmd in ("trello", "monkey"):
        from factorylm.trello import cli as trello_cli

        return trello_cli.run(settings, args)
    if cmd == "bench":
        from factorylm import bench

        if args.name != "all" and args.name not in bench.BENCHMARKS:
            known = ", ".join(bench.BENCHMARKS)
            print(f"error: no benchmark {args.name!r}; known: {known}, all", file=sys.stderr)
            return 2
        return bench.main(settings, args.name)
    if cmd == "simulate":
        if args.sim_action:
            return _simulator_control(args)
        asyncio.run(_simulate(settings, args.control_port))
        return 0
    queue = getattr(args, "queue", "all")
    asyncio.run(
        _serve(
            settings,
            agents=cmd == "serve" or (cmd == "worker" and queue in ("agents", "all")),
            edge=cmd == "serve" or (cmd == "worker" and queue in ("plc-edge", "all")),
            ingest=cmd in ("ingest", "serve"),
            api=cmd in ("api", "serve"),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
