"""Serving a Starlette app inside the caller's event loop: the product's API, and local servers
beside it (the simulator's fault control, the fakes of hosted services in the demo).

uvicorn normally installs its own SIGINT/SIGTERM handlers; here the host process owns them,
so that Ctrl-C stops the ingest (which flushes every accepted sample) before the API.

uvicorn's graceful shutdown waits for every open response, and a long-lived one (the board's
event streams) would hold it forever: `stopping(app)` is an event set when the server begins
to stop, for such responses to end themselves first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn
from starlette.applications import Starlette


class EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the host process owns Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def stopping(app: Starlette) -> asyncio.Event:
    """Set when the server serving `app` begins to stop (never, for an app served otherwise)."""
    event: asyncio.Event | None = getattr(app.state, "stopping", None)
    if event is None:
        event = app.state.stopping = asyncio.Event()
    return event


class AppServer:
    """One Starlette app on host:port, started and stopped from the caller's loop."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._stopping = stopping(app)
        self._server = EmbeddedUvicorn(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Returns once the socket listens; raises the bind error (e.g. port in use)."""
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError(f"server on {self.url} stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping.set()
            self._server.should_exit = True
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
