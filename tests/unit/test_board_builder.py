"""The board's page builds yield the CPU to the collectors on a host they share: they run on a
thread at SCHED_IDLE (Linux, where the product runs), and a browser that leaves while its
page's gzip is made does not take it from the others waiting for it."""

from __future__ import annotations

import asyncio
import gzip
import os
import threading

from api.board import _in_builder, _Page


async def test_page_builds_run_on_a_thread_that_takes_only_idle_cpu() -> None:
    policy, name = await _in_builder(
        lambda: (os.sched_getscheduler(0), threading.current_thread().name)
    )
    assert policy == os.SCHED_IDLE
    assert name.startswith("board-build")
    # The event loop's own thread keeps its policy: the API serves at its usual priority.
    assert os.sched_getscheduler(0) != os.SCHED_IDLE


async def test_a_browser_leaving_does_not_cancel_the_gzip_another_waits_for() -> None:
    page = _Page(0.0, b'{"series":[' + b"1.5," * 200_000 + b"0]}")
    leaving = asyncio.create_task(page.gzipped())
    staying = asyncio.create_task(page.gzipped())
    await asyncio.sleep(0)  # both are waiting for the one compression
    leaving.cancel()
    assert gzip.decompress(await staying) == page.body
    assert await page.gzipped() is await staying  # made once, kept
