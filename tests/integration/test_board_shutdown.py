"""`factorylm api` as its own process with a plant board open: the board's event stream lives
on (it used to end every 10 s for the browser to reconnect), and SIGTERM still stops the API
at once, the open stream ended by the server rather than waited for — also while the board's
query to a drift workflow no worker answers is under way (a process that stopped with such a
Temporal call in flight used to hang in the interpreter's shutdown for good: app/cli.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
from temporalio.client import Client

from factorylm.settings import PROJECT_ROOT, Settings
from helpers import free_port, make_alert, plant_with_free_ports, until
from workflows.drift_response import DriftResponseWorkflow

# The old stream lifetime: a stream that outlives it is no longer cut on a timer.
OLD_LIFETIME_S = 10.0
# From the signal to the process's exit with a stream open: the API's own stop, not a wait.
EXIT_WITHIN_S = 5.0


async def test_an_open_board_stream_lives_on_and_sigterm_stops_the_api_at_once_even_mid_query(
    tmp_path: Path, settings: Settings, client: Client
) -> None:
    # A drift response whose worker is gone: the board's status query to it waits out its
    # timeout (1 s of every refresh), so a stop often finds that Temporal call under way.
    orphan = await client.start_workflow(
        DriftResponseWorkflow.run,
        make_alert(5.0, metric="current"),
        id=f"board-orphan-{uuid.uuid4().hex[:8]}",
        task_queue=f"nobody-polls-{uuid.uuid4().hex[:8]}",
    )
    _, plant_file = plant_with_free_ports(tmp_path)
    port = free_port()
    token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "FACTORYLM_PLANT_FILE": str(plant_file),
        "FACTORYLM_API_PORT": str(port),
        "FACTORYLM_API_TOKEN": token,
        "FACTORYLM_PG_DATABASE": settings.pg_database,
        "FACTORYLM_PG_PORT": str(settings.pg_port),
        "FACTORYLM_TEMPORAL_ADDRESS": settings.temporal_address,
        "FACTORYLM_TEMPORAL_NAMESPACE": settings.temporal_namespace,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "api",
        env=env,
        cwd=PROJECT_ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    updates: list[float] = []
    listed: list[float] = []  # status events that list the orphan among the open responses
    ended: list[float] = []
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:

            async def listening() -> bool:
                assert proc.returncode is None, "the API exited early"
                with contextlib.suppress(httpx.TransportError):
                    return (await http.get("/health")).status_code in (200, 503)
                return False

            await until("the API to listen", listening, timeout_s=60)

            async def browser() -> None:
                async with http.stream("GET", "/board/events") as response:
                    assert response.status_code == 200
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            updates.append(time.monotonic())
                            event = orjson.loads(line.removeprefix("data: "))
                            items = event.get("responses", {}).get("items", [])
                            ids = [r["workflow_id"] for r in items]
                            if orphan.id in ids or (listed and "read" in event):
                                listed.append(updates[-1])
                ended.append(time.monotonic())  # the server ended the body cleanly

            stream = asyncio.create_task(browser())
            opened = time.monotonic()
            # No ingest runs: the hub's idle ticks (every 2 s) keep the stream alive.
            await until(
                "updates past the old lifetime on one stream",
                lambda: updates and updates[-1] - opened > OLD_LIFETIME_S + 1,
                timeout_s=40,
            )
            assert not stream.done() and not ended, "the stream ended by itself"
            # Right after a status read: the read that found the responses stale has just
            # started the next refresh, whose query to the orphan is now under way.
            await until("the orphan on the board", lambda: listed, timeout_s=20)
            seen = len(listed)
            await until("the next status read", lambda: len(listed) > seen, timeout_s=10)
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            try:
                _, stderr = await asyncio.wait_for(proc.communicate(), 30)
            except TimeoutError:
                proc.kill()
                _, stderr = await proc.communicate()
                raise AssertionError(
                    "the API did not exit within 30 s of SIGTERM:\n" + stderr.decode()
                ) from None
            exited = time.monotonic()
            await asyncio.wait_for(stream, 5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await orphan.terminate("test over")
    assert proc.returncode == 0, stderr.decode()
    assert exited - signalled < EXIT_WITHIN_S, f"exit took {exited - signalled:.1f} s"
    assert ended and ended[0] <= exited, "the stream was not ended by the stopping server"
