"""Run a Starlette app on a loopback port inside the current event loop."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from starlette.applications import Starlette

from factorylm.stack import EmbeddedUvicorn


class LocalServer:
    def __init__(self, app: Starlette, port: int = 0) -> None:
        self.app = app
        self.port = port or free_port()
        self._server = EmbeddedUvicorn(
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
        if self._task:
            await self._task


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on right now (local servers, benchmarks), and never
    one this process has handed out before: the kernel's picks repeat often enough that a
    plant of 200 simulated devices would otherwise get two on the same port."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
