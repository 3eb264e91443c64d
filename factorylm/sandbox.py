"""Run an untrusted command (a card's success check) under bubblewrap.

The command gets a new user, PID, network, IPC, UTS and cgroup namespace; only the system's
read-only directories (`/usr`, `/etc`, ...) and the worktree are mounted, the worktree alone
writable; /tmp is private; the environment is a fixed PATH and HOME; it runs as an
unprivileged uid under rlimits (CPU time, address space, processes, file size), and the whole
PID namespace is killed at the timeout. Nothing of the worker — its environment, its files, the
database or Temporal on loopback — is reachable from inside.

Two details matter for secrets. bwrap's own init process (PID 1 inside) keeps the environment
bwrap was started with, and a sandboxed process may read /proc/1/environ: so bwrap itself is
started with an empty environment, never the worker's. And when the worker runs as root, the
sandbox's "unprivileged uid" would still be root outside the user namespace (able to read
root's 0600 files and exempt from RLIMIT_NPROC), so bwrap is started as the sandbox uid
(setpriv) and the worktree is handed to that uid for the run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# System directories a check may read (never write). Nothing of the project, /root or /home.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Files under /etc that only root should read; hidden behind /dev/null.
MASKED_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")
NOBODY = 65534
_TAIL_BYTES = 64 * 1024


class SandboxUnavailable(RuntimeError):
    """bubblewrap (or prlimit/setpriv) is missing or cannot create namespaces here."""


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 60.0
    cpu_s: int = 60
    memory_mb: int = 1024
    processes: int = 64
    file_mb: int = 16  # largest file the command may write, and its captured output
    uid: int = NOBODY
    path: str = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class SandboxResult:
    command: str
    exit_code: int | None  # None: killed at the timeout
    output: str  # the tail of stdout and stderr together
    seconds: float
    timed_out: bool = False
    signal_name: str = ""

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def tool(name: str) -> str:
    found = shutil.which(name, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        package = {"bwrap": "bubblewrap", "prlimit": "util-linux", "setpriv": "util-linux"}[name]
        raise SandboxUnavailable(
            f"{name} is not installed: the Monkey runs checks only inside bubblewrap "
            f"(apt-get install {package}; `make setup` does it)"
        )
    return found


def sandbox_argv(argv: list[str], worktree: Path, limits: SandboxLimits) -> list[str]:
    """The full command line: prlimit, then (as root) setpriv to the sandbox uid, then bwrap."""
    root = str(worktree.resolve())
    memory = limits.memory_mb * 1024 * 1024
    fsize = limits.file_mb * 1024 * 1024
    cmd = [
        tool("prlimit"),
        f"--cpu={limits.cpu_s}",
        f"--as={memory}",
        f"--nproc={limits.processes}",
        f"--fsize={fsize}",
        "--core=0",
        "--",
    ]
    if os.geteuid() == 0:
        cmd += [
            tool("setpriv"),
            f"--reuid={limits.uid}",
            f"--regid={limits.uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ]
    cmd += [tool("bwrap")]
    for directory in SYSTEM_DIRS:
        if os.path.islink(directory):
            cmd += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            cmd += ["--ro-bind", directory, directory]
    for masked in MASKED_FILES:
        if os.path.exists(masked):
            cmd += ["--ro-bind", "/dev/null", masked]
    cmd += [
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", "/tmp",
        "--bind", root, root,
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv", "PATH", limits.path,
        "--setenv", "HOME", root,
        "--setenv", "TMPDIR", "/tmp",
        "--setenv", "LANG", "C.UTF-8",
        "--chdir", root,
        "--uid", str(limits.uid),
        "--gid", str(limits.uid),
        "--",
        *argv,
    ]  # fmt: skip
    return cmd


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid, follow_symlinks=False)
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(base, name), uid, gid, follow_symlinks=False)


def _tail(path: Path) -> str:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - _TAIL_BYTES))
        data = f.read()
    text = data.decode("utf-8", errors="replace")
    return ("…" + text) if size > _TAIL_BYTES else text


def run_sandboxed(command: str, worktree: Path, limits: SandboxLimits) -> SandboxResult:
    """Run one check (a command line, split like a shell would, but no shell) in the worktree.
    Blocking: call it from a thread."""
    started = time.monotonic()
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return SandboxResult(command, 2, f"cannot parse the command: {exc}", 0.0)
    if not argv:
        return SandboxResult(command, 2, "empty command", 0.0)
    full = sandbox_argv(argv, worktree, limits)
    as_root = os.geteuid() == 0
    owner = worktree.stat()
    if as_root:  # the sandbox uid owns the worktree for the run (see the module's docstring)
        _chown_tree(worktree, limits.uid, limits.uid)
    out_dir = Path(tempfile.mkdtemp(prefix="factorylm-check-"))
    out_path = out_dir / "output"
    timed_out = False
    try:
        with out_path.open("wb") as out:
            # An empty environment for bwrap itself: its PID 1 inside keeps what it got here.
            process = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                close_fds=True,
                start_new_session=True,
            )
            try:
                code: int | None = process.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                # bwrap dies, its PID 1 (--die-with-parent) dies, and with it every process
                # of the PID namespace; the process group catches anything in between.
                _kill_group(process)
                process.wait()
                code = None
        output = _tail(out_path)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        if as_root:
            _chown_tree(worktree, owner.st_uid, owner.st_gid)
    signal_name = ""
    if code is not None and code < 0:
        signal_name = signal.Signals(-code).name
    elif code is not None and code > 128 and code - 128 in signal.valid_signals():
        signal_name = signal.Signals(code - 128).name
    if "bwrap:" in output and code == 1 and output.strip().startswith("bwrap:") is not False:
        pass
    return SandboxResult(
        command,
        code,
        output,
        time.monotonic() - started,
        timed_out=timed_out,
        signal_name=signal_name,
    )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def check_available() -> None:
    """Raise SandboxUnavailable unless a trivial command runs in the sandbox here."""
    with tempfile.TemporaryDirectory(prefix="factorylm-sandbox-probe-") as tmp:
        result = run_sandboxed("true", Path(tmp), SandboxLimits(timeout_s=20))
        if not result.passed:
            raise SandboxUnavailable(
                f"bubblewrap cannot run a sandbox here (exit {result.exit_code}): "
                f"{result.output.strip()[-500:]}"
            )
