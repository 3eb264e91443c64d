"""Commands to the ingest process over PostgreSQL NOTIFY: the health monitor asks for a
collector restart with `NOTIFY collector_restart, '<plc id>'`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from factorylm.channels import RESTART_CHANNEL

log = logging.getLogger(__name__)


class CommandListener:
    def __init__(self, dsn: str, restart: Callable[[str], Awaitable[bool]]) -> None:
        self._dsn = dsn
        self._restart = restart
        self._conn: asyncpg.Connection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.handled: list[str] = []

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self._dsn)
        await self._conn.add_listener(RESTART_CHANNEL, self._on_notify)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        task = asyncio.get_running_loop().create_task(self._do_restart(payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _do_restart(self, plc_id: str) -> None:
        if await self._restart(plc_id):
            self.handled.append(plc_id)
        else:
            log.info("restart asked for %s, which this ingest does not poll", plc_id)

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()
