"""A test that hangs fails, with the stacks that say where, instead of holding the run for good.

Why: the suite waits on real servers, browsers and subprocesses, and a wait that never ends
(a fresh-clone run once sat 16 min after the browser test's last screenshot, idle in the event
loop) shows nothing in pytest's output and spends CI's whole budget. After `BOUND_S` of one
test's set-up, call or tear-down, a watcher thread prints every thread's stack and signals the
main thread, which prints every asyncio task's stack (all of it on stderr, shown with the
test's failure) and cancels the coroutine pytest-asyncio
is running for that test: its `finally` blocks and fixtures clean up, the test fails, and the
run goes on. If it is still stuck `EXIT_AFTER_S` later (a hang outside any coroutine), the
stacks are printed again and the process exits with status 3.

A test that needs longer says so: `@pytest.mark.bound_s(600)` (and `exit_after_s=` for the
second stage).
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Generator
from types import FrameType
from typing import TextIO

import pytest

# Far above the slowest test of the suite (about 190 s, the multi-site link cut), far below
# CI's patience.
BOUND_S = 360.0
EXIT_AFTER_S = 120.0
_SIGNAL = signal.SIGUSR2

# What the main thread's handler cancels: the coroutine names of the stuck step's task.
_stuck: set[str] = set()
_config: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "bound_s(seconds, exit_after_s=120): this test may run longer than hang_guard.BOUND_S",
    )
    signal.signal(_SIGNAL, _on_signal)
    global _config
    _config = config


def _uncaptured() -> None:
    """pytest's capture off for good, so what follows reaches the real stderr (the process is
    about to exit: the captured output would be lost with it)."""
    capman = _config.pluginmanager.getplugin("capturemanager") if _config else None
    if capman is not None:
        capman.suspend_global_capture(in_=True)


def _out() -> TextIO:
    return sys.__stderr__ or sys.stderr


def _say(text: str) -> None:
    _out().write(text + "\n")
    _out().flush()


def _on_signal(_signum: int, _frame: FrameType | None) -> None:
    """In the main thread: the tasks' stacks, then the stuck step's coroutine cancelled."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _say("hang_guard: no event loop is running (the hang is in plain code)")
        return
    for task in asyncio.all_tasks(loop):
        _say(f"--- task {task.get_name()}: {task.get_coro()!r}")
        task.print_stack(limit=30, file=_out())
    cancelled = 0
    for task in asyncio.all_tasks(loop):
        if getattr(task.get_coro(), "__name__", None) in _stuck:
            task.cancel("hang_guard: over its bound")
            cancelled += 1
    _say(f"hang_guard: cancelled {cancelled} task(s) named {sorted(_stuck)}")
    loop.call_soon_threadsafe(lambda: None)  # wake the loop to deliver the cancel


class _Guard:
    """Watches one step of one test from a daemon thread."""

    def __init__(self, item: pytest.Item, when: str) -> None:
        marker = item.get_closest_marker("bound_s")
        self.bound_s = float(marker.args[0]) if marker is not None else BOUND_S
        self.exit_after_s = EXIT_AFTER_S
        if marker is not None:
            self.exit_after_s = float(marker.kwargs.get("exit_after_s", EXIT_AFTER_S))
        self.item = item
        self.when = when
        self.fired = False
        # pytest-asyncio runs the test function's coroutine itself as a task, and a fixture's
        # set-up and tear-down as its `setup` and `async_finalizer` coroutines.
        self.names = {"setup"} if when == "set-up" else {"async_finalizer"}
        if when == "call" and isinstance(item, pytest.Function):
            self.names = {item.originalname}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="hang-guard", daemon=True)

    def __enter__(self) -> _Guard:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()

    def _watch(self) -> None:
        if self._done.wait(self.bound_s):
            return
        self.fired = True
        _say(
            f"\nhang_guard: {self.item.nodeid} ({self.when}) still running after "
            f"{self.bound_s:.0f} s; every thread's stack, then every task's:"
        )
        faulthandler.dump_traceback(file=_out(), all_threads=True)
        _stuck.clear()
        _stuck.update(self.names)
        signal.pthread_kill(threading.main_thread().ident or 0, _SIGNAL)
        if self._done.wait(self.exit_after_s):
            return
        _uncaptured()
        _say(
            f"hang_guard: {self.item.nodeid} ({self.when}) still stuck "
            f"{self.exit_after_s:.0f} s after the cancel; its stacks, then exit status 3"
        )
        faulthandler.dump_traceback(file=_out(), all_threads=True)
        os._exit(3)


def _guarded(item: pytest.Item, when: str) -> Generator[None, None, None]:
    started = time.monotonic()
    with _Guard(item, when) as guard:
        try:
            yield
        except BaseException as exc:
            if guard.fired:
                raise pytest.fail.Exception(
                    f"hung: cancelled by hang_guard in its {when} after "
                    f"{time.monotonic() - started:.0f} s (the stacks are on stderr)"
                ) from exc
            raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _guarded(item, "set-up"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _guarded(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _guarded(item, "tear-down"))
