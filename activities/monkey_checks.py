"""Success checks for a card: allow-listed programs, run as argv (never a shell) in a fresh
scratch directory holding the card's files, with a timeout and a minimal environment."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from factorylm.models.monkey import FileChange

_OUTPUT_TAIL = 1500


@dataclass(frozen=True)
class CheckPolicy:
    allowlist: tuple[str, ...]
    search_path: str
    timeout_s: float


@dataclass(frozen=True)
class CheckResult:
    command: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class CheckReport:
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def as_text(self) -> str:
        if not self.results:
            return "no success checks on this card"
        return "\n".join(
            f"{'PASS' if r.passed else 'FAIL'} `{r.command}`"
            + (f": {r.detail}" if r.detail else "")
            for r in self.results
        )


class UnsafePath(ValueError):
    pass


def write_files(root: Path, files: list[FileChange]) -> None:
    for change in files:
        relative = PurePosixPath(change.path)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise UnsafePath(f"file path {change.path!r} must be relative and stay inside the card")
        target = root.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(change.content, encoding="utf-8")


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _OUTPUT_TAIL else "…" + text[-_OUTPUT_TAIL:]


def run_one(command: str, root: Path, policy: CheckPolicy) -> CheckResult:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return CheckResult(command, False, f"cannot parse the command: {exc}")
    if not argv:
        return CheckResult(command, False, "empty command")
    program = argv[0]
    if "/" in program or program not in policy.allowlist:
        return CheckResult(
            command,
            False,
            f"{program!r} is not an allowed check program (FACTORYLM_MONKEY_CHECK_ALLOWLIST: "
            f"{', '.join(policy.allowlist)})",
        )
    executable = shutil.which(program, path=policy.search_path)
    if executable is None:
        return CheckResult(command, False, f"{program} not found on {policy.search_path}")
    env = {"PATH": policy.search_path, "HOME": str(root), "TMPDIR": str(root), "LANG": "C.UTF-8"}
    try:
        done = subprocess.run(  # argv from the allow-list, no shell
            [executable, *argv[1:]],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=policy.timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return CheckResult(command, False, f"timed out after {policy.timeout_s:g} s")
    except OSError as exc:
        return CheckResult(command, False, f"could not run: {exc}")
    if done.returncode == 0:
        return CheckResult(command, True, "")
    output = _tail((done.stdout or "") + (done.stderr or ""))
    return CheckResult(
        command, False, f"exit {done.returncode}" + (f"\n{output}" if output else "")
    )


def run_checks(checks: list[str], files: list[FileChange], policy: CheckPolicy) -> CheckReport:
    """Blocking: call it from a thread."""
    root = Path(tempfile.mkdtemp(prefix="factorylm-monkey-"))
    try:
        try:
            write_files(root, files)
        except (UnsafePath, OSError) as exc:
            return CheckReport((CheckResult("write the card's files", False, str(exc)),))
        return CheckReport(tuple(run_one(command, root, policy) for command in checks))
    finally:
        shutil.rmtree(root, ignore_errors=True)
