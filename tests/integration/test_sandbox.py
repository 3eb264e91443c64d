"""The check sandbox (factorylm/sandbox.py) under real bubblewrap: what a hostile success check
tries — the worker's environment, the database and Temporal on loopback, files outside the
worktree, a fork bomb, a memory hog, an endless loop, a flood of output — fails, and the
secret planted in the worker's environment appears in no output."""

from __future__ import annotations

import os
import secrets
import shlex
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from factorylm.sandbox import SandboxLimits, run_sandboxed, sandbox_argv
from factorylm.settings import Settings
from helpers import until

LIMITS = SandboxLimits(timeout_s=10, cpu_s=3, memory_mb=512, processes=32, file_mb=2)


def py(code: str) -> str:
    return shlex.join(["python3", "-c", code])


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"planted-{secrets.token_hex(16)}"
    monkeypatch.setenv("FACTORYLM_TWILIO_AUTH_TOKEN", value)
    monkeypatch.setenv("FACTORYLM_SANDBOX_CANARY", value)
    return value


@pytest.fixture
def worktree() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are 0700, and the sandbox uid must reach it.
    path = Path(tempfile.mkdtemp(prefix="factorylm-sandbox-test-"))
    os.chmod(path, 0o755)
    (path / "hello.txt").write_text("hello\n")
    yield path
    for base, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(base, name))
        for name in dirs:
            os.rmdir(os.path.join(base, name))
    os.rmdir(path)


def _sandbox_uid_processes() -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == LIMITS.uid:
                    count += 1
            except FileNotFoundError:
                pass
    return count


def test_a_check_runs_in_the_worktree_as_an_unprivileged_uid(worktree: Path) -> None:
    result = run_sandboxed(
        py("import os; print(os.getuid(), open('hello.txt').read())"), worktree, LIMITS
    )
    assert result.passed, result.output
    assert result.output.split() == ["65534", "hello"]
    written = run_sandboxed("sh -c 'echo made > made.txt'", worktree, LIMITS)
    assert written.passed and (worktree / "made.txt").read_text() == "made\n"
    # The worktree is handed back to its owner after the run.
    assert (worktree / "made.txt").stat().st_uid == os.geteuid()


def test_the_workers_environment_is_out_of_reach(worktree: Path, secret: str) -> None:
    attack = py(
        "import glob, os, sys\n"
        "seen = [repr(dict(os.environ))]\n"
        "for path in glob.glob('/proc/*/environ') + ['/proc/%d/environ' % os.getppid()]:\n"
        "    try: seen.append(open(path, 'rb').read().decode(errors='replace'))\n"
        "    except OSError as exc: seen.append(str(exc))\n"
        "text = '\\n'.join(seen); print(text)\n"
        "sys.exit(0 if 'FACTORYLM_' in text else 1)\n"
    )
    result = run_sandboxed(attack, worktree, LIMITS)
    assert result.exit_code == 1, result.output
    assert secret not in result.output and "FACTORYLM_" not in result.output
    # Only the sandbox's own processes are visible: a new PID namespace.
    listing = run_sandboxed("ls /proc", worktree, LIMITS)
    pids = [p for p in listing.output.split() if p.isdigit()]
    assert listing.passed and 1 <= len(pids) <= 3 and max(map(int, pids)) < 10
    # bwrap is started with an empty environment, so there is nothing to read on its command
    # line either: the argv names only paths, limits and the check.
    assert secret not in " ".join(sandbox_argv(["true"], worktree, LIMITS))


@pytest.mark.parametrize("service", ["postgresql", "temporal"])
def test_loopback_services_are_unreachable(
    worktree: Path, settings: Settings, service: str
) -> None:
    if service == "postgresql":
        host, port = settings.pg_host, settings.pg_port
    else:
        host, _, raw = settings.temporal_address.rpartition(":")
        port = int(raw)
    # The port really is open on the worker's loopback: the refusal is the sandbox's doing.
    import socket

    socket.create_connection((host, port), timeout=5).close()
    result = run_sandboxed(
        py(
            f"import socket; socket.create_connection(({host!r}, {port}), timeout=3); print('connected')"
        ),
        worktree,
        LIMITS,
    )
    assert result.exit_code == 1 and "connected" not in result.output
    assert "ConnectionRefusedError" in result.output or "unreachable" in result.output


def test_nothing_outside_the_worktree_is_writable_or_readable(worktree: Path) -> None:
    outside = Path(tempfile.mkdtemp(prefix="factorylm-outside-"))
    os.chmod(outside, 0o777)  # even a directory anyone may write to on the host
    private = outside / "secret.env"
    private.write_text("TOKEN=do-not-read\n")
    try:
        for target in (f"{outside}/pwned", "/etc/pwned", "/usr/pwned", f"{Path.cwd()}/pwned"):
            result = run_sandboxed(f"touch {target}", worktree, LIMITS)
            assert result.exit_code != 0, target
            assert not Path(target).exists()
        read = run_sandboxed(f"cat {private}", worktree, LIMITS)
        assert read.exit_code != 0 and "do-not-read" not in read.output
        for path in ("/root", "/home", "/work", str(Path.cwd())):
            assert run_sandboxed(f"ls {path}", worktree, LIMITS).exit_code != 0, path
        # /tmp is the sandbox's own: a file made there is not on the host.
        name = f"factorylm-sandbox-{secrets.token_hex(4)}"
        assert run_sandboxed(f"touch /tmp/{name}", worktree, LIMITS).passed
        assert not Path("/tmp", name).exists()
    finally:
        private.unlink()
        os.rmdir(outside)


async def test_a_fork_bomb_is_stopped_by_the_process_limit(worktree: Path) -> None:
    bomb = py("import os\nwhile True:\n    os.fork()\n")
    result = run_sandboxed(bomb, worktree, LIMITS)
    assert result.exit_code not in (0, None), result.output
    assert "BlockingIOError" in result.output or "Resource temporarily unavailable" in result.output
    assert result.seconds < LIMITS.timeout_s
    # Nothing of it survives the run: the PID namespace died with it (the kernel reaps the
    # killed processes a moment after bwrap returns).
    await until("no sandbox process left", lambda: _sandbox_uid_processes() == 0, timeout_s=15)


def test_a_memory_hog_is_stopped_by_the_memory_limit(worktree: Path) -> None:
    hog = py("chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024 * 1024))\n")
    result = run_sandboxed(hog, worktree, LIMITS)
    assert result.exit_code == 1 and "MemoryError" in result.output


def test_an_endless_loop_is_killed_by_the_cpu_limit_and_a_sleeper_at_the_timeout(
    worktree: Path,
) -> None:
    spin = run_sandboxed(py("while True: pass"), worktree, LIMITS)
    assert not spin.passed and spin.signal_name in ("SIGKILL", "SIGXCPU")
    assert spin.seconds < LIMITS.timeout_s
    sleeper = run_sandboxed("sleep 60", worktree, SandboxLimits(timeout_s=1.5))
    assert sleeper.timed_out and sleeper.exit_code is None and sleeper.seconds < 10


def test_output_is_bounded(worktree: Path) -> None:
    flood = py("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n")
    result = run_sandboxed(flood, worktree, LIMITS)
    # Python ignores SIGXFSZ: its write fails with EFBIG (and so does its traceback, the
    # output being full), and it exits non-zero at once.
    assert result.exit_code not in (0, None) and result.seconds < LIMITS.timeout_s
    shell = run_sandboxed("sh -c 'yes > flood.txt'", worktree, LIMITS)
    assert shell.signal_name == "SIGXFSZ"
    assert (
        not (worktree / "flood.txt").exists()
        or (worktree / "flood.txt").stat().st_size <= 2 * 1024 * 1024
    )
    assert len(result.output) <= 70 * 1024
