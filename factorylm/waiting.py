"""Waiting for a condition (never for a fixed time) in scenarios and benchmarks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def wait_for(
    what: str, check: Callable[[], Any], *, timeout_s: float = 60.0, interval_s: float = 0.1
) -> Any:
    """Poll an async or sync condition until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(interval_s)
