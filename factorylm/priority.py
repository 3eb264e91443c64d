"""CPU priority for work that must never delay a poll on a host it shares with collectors."""

from __future__ import annotations

import os


def run_idle() -> None:
    """The calling thread, and the threads and processes it starts from now on, take only CPU
    nothing else on the host wants (Linux SCHED_IDLE: no privilege needed to lower it, and a
    waking collector preempts it at once, which a nice level does not promise). Elsewhere,
    where the policy does not exist, a no-op."""
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
