"""A Starlette app on a free loopback port, in the test's event loop, with scripted replies.

Reply and Script live in the product (factorylm/fakes/scripted.py): the demo and the benchmarks
script the same local LLM APIs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn
from starlette.applications import Starlette

from factorylm.fakes.scripted import Reply, Script
from helpers import free_port

__all__ = ["FakeServer", "Reply", "Script"]


class _Quiet(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class FakeServer:
    def __init__(self, app: Starlette) -> None:
        self.port = free_port()
        self._server = _Quiet(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
            )
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
