"""Waiting for a person: a durable timer that ends early when their reply arrives.

The timer carries a summary, so the Web UI shows "approval timer" or "outcome reply timer"
instead of an anonymous timer in the workflow history.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow


async def replied_within(replied: Callable[[], bool], seconds: float, timer: str) -> bool:
    """True once `replied()` holds; False when the timer named `timer` fires first."""
    try:
        await workflow.wait_condition(
            replied, timeout=timedelta(seconds=seconds), timeout_summary=timer
        )
    except TimeoutError:
        return False
    return True
