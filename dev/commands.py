"""The development commands, `demo`, `bench` and `simulate`: the CLI finds them through the
`factorylm.commands` entry points (pyproject.toml), so the application layer never imports
the development layer. They need the `sim` extra (`pip install 'factorylm[sim]'`)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from app.commands import Command, SubParsers
from dev.demo.scenarios import DEFAULT_SCENARIO, SCENARIOS
from factorylm.settings import Settings


def _add_demo(sub: SubParsers) -> None:
    demo = sub.add_parser("demo", help="run the product on its embedded default with a scenario")
    demo.add_argument("--once", action="store_true", help="run the scenario, tear down, print JSON")
    demo.add_argument(
        "--scenario",
        choices=list(SCENARIOS),
        default=DEFAULT_SCENARIO,
        help="; ".join(f"{name}: {s.help}" for name, s in SCENARIOS.items()),
    )


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from dev.demo.runner import main

    return main(settings, once=args.once, name=args.scenario)


def _add_bench(sub: SubParsers) -> None:
    bench = sub.add_parser("bench", help="run benchmarks; one JSON line each")
    bench.add_argument("name", nargs="?", default="all", help="a benchmark name, or all")


def _bench(settings: Settings, args: argparse.Namespace) -> int:
    from dev.bench import runner

    if args.name != "all" and args.name not in runner.BENCHMARKS:
        known = ", ".join(runner.BENCHMARKS)
        print(f"error: no benchmark {args.name!r}; known: {known}, all", file=sys.stderr)
        return 2
    return runner.main(settings, args.name)


def _add_simulate(sub: SubParsers) -> None:
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


async def _simulate(settings: Settings, control_port: int) -> None:
    from dev.simulator.plant import PlantSimulator
    from factorylm.plant import load_plant

    sim = PlantSimulator(load_plant(settings.plant_file), control_port=control_port)
    await sim.start()
    for broker in sim.brokers:
        print(f"MQTT broker (Mosquitto) on {broker.host}:{broker.port}", flush=True)
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


def _simulate_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.sim_action:
        return _simulator_control(args)
    asyncio.run(_simulate(settings, args.control_port))
    return 0


DEMO = Command(names=("demo",), add_parsers=_add_demo, run=_demo)
BENCH = Command(names=("bench",), add_parsers=_add_bench, run=_bench)
SIMULATE = Command(names=("simulate",), add_parsers=_add_simulate, run=_simulate_command)
