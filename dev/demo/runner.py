"""`make demo` / `factorylm demo`: the whole product on its embedded default, with a scenario.

Starts PostgreSQL, the Temporal dev server, the simulated plant (S7, EtherNet/IP, Modbus TCP
and RTU peers), the workers, the ingest and the API; runs the chosen scenario; and reports what
happened. `--once` tears everything down and prints one JSON line last.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from typing import Any

from dev.demo.environment import Demo, demo_settings, say
from dev.demo.narrator import Narrator
from dev.demo.scenarios import scenario
from factorylm.settings import Settings

log = logging.getLogger(__name__)


async def run(settings: Settings, *, once: bool, name: str = "drift") -> int:
    demo = Demo(demo_settings(settings), control_port=15099)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    summary: dict[str, Any] = {"status": "failed"}
    try:
        await demo.up()
        summary = await scenario(name)(demo, say)
        if not once:
            say("the demo stays up: open the Web UI, try the API; Ctrl-C stops what it started")
            # From here on every alarm, workflow start, message and write gets a line, so a
            # fault injected by hand (`factorylm simulate inject`) shows what it set off.
            narrator = Narrator(demo.settings.pg_dsn, say)
            await narrator.start()
            say("narrating what happens next (alarms, workflows, messages, PLC writes)")
            try:
                await stop.wait()
            finally:
                await narrator.stop()
    except Exception as exc:
        log.debug("demo failed", exc_info=True)
        say(f"FAILED: {exc}")
        summary = {"status": "failed", "error": str(exc)}
    finally:
        await demo.down()
    print(json.dumps(summary), flush=True)
    return 0 if summary.get("status") == "completed" else 1


def main(settings: Settings, *, once: bool, name: str = "drift") -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return asyncio.run(run(settings, once=once, name=name))
