"""One worker thread per PLC for client libraries that block (snap7, pycomm3).

A dedicated single thread keeps each blocking client off the event loop, serialises the calls
on that client (neither library is thread-safe), and means a PLC that hangs until its timeout
ties up only its own thread, never another PLC's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class PlcThread:
    def __init__(self, plc_id: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"plc-{plc_id}")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def shutdown(self) -> None:
        # Don't wait: a call stuck in a PLC timeout finishes on its own and the thread exits.
        self._executor.shutdown(wait=False, cancel_futures=True)
