"""The hang guard (tests/hang_guard.py) in a pytest run of its own: a coroutine that never
ends is cancelled after its bound, with its stack printed, its clean-up run and the run going
on; a hang outside any coroutine ends the process with status 3 instead of holding it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parents[1]

STUCK = """
import asyncio
import threading
from pathlib import Path

import pytest


@pytest.mark.bound_s(1)
async def test_waits_for_an_event_nobody_sets(tmp_path_factory):
    try:
        await asyncio.Event().wait()
    finally:
        Path(__file__).with_name("cleaned-up").touch()


async def test_after_it():
    Path(__file__).with_name("ran-after").touch()
"""

BLOCKED = """
import threading

import pytest


@pytest.mark.bound_s(1, exit_after_s=1)
def test_blocks_the_main_thread():
    threading.Event().wait()


def test_never_reached():
    pass
"""


def _pytest(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_case.py").write_text(source)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "hang_guard",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "-q",
            str(tmp_path / "test_case.py"),
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_hung_coroutine_is_cancelled_with_its_stack_and_the_run_goes_on(tmp_path: Path) -> None:
    run = _pytest(tmp_path, STUCK)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout, run.stdout
    assert "hung: cancelled by hang_guard in its call" in run.stdout
    # The stacks come with the failure's report (its captured stderr).
    assert "test_waits_for_an_event_nobody_sets (call) still running after 1 s" in run.stdout
    # The task's stack names the line it waits on.
    assert "await asyncio.Event().wait()" in run.stdout, run.stdout
    assert (tmp_path / "cleaned-up").exists() and (tmp_path / "ran-after").exists()


def test_a_hang_outside_any_coroutine_ends_the_process_with_status_3(tmp_path: Path) -> None:
    run = _pytest(tmp_path, BLOCKED)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "test_blocks_the_main_thread (call) still stuck 1 s after the cancel" in run.stderr
    assert "test_blocks_the_main_thread" in run.stderr  # faulthandler's stack of the main thread
    assert "test_never_reached" not in run.stdout
