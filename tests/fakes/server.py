"""A Starlette app on a free loopback port, in the test's event loop, with scripted replies."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette

from helpers import free_port


@dataclass
class Reply:
    """One scripted answer: a JSON value for the structured output, raw text, or an error."""

    body: Any = None
    raw_text: str | None = None
    status: int = 200
    error_type: str = "api_error"
    delay_s: float = 0.0


@dataclass
class Script:
    """Replies served in order; when they run out, `default` computes one from the request."""

    replies: deque[Reply] = field(default_factory=deque)
    default: Callable[[dict[str, Any]], Reply] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def push(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def next(self, request: dict[str, Any]) -> Reply:
        if self.replies:
            return self.replies.popleft()
        if self.default is not None:
            return self.default(request)
        return Reply(status=500, body={"message": "the fake has no reply scripted"})


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
