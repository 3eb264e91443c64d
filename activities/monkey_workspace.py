"""The Monkey's git workspace: a clone of the configured repository, a branch per card, a fresh
worktree per attempt, the model's change applied and committed, pushed for review, merged when
a person accepts it.

The clone is bare (`repo.git`) and every attempt gets its own `git worktree`: the worktree's
`.git` is a file naming the clone, so a check that writes anywhere in the worktree cannot reach
the clone's config or hooks. Git never runs inside a worktree after its checks have: the next
attempt deletes it and adds a new one from the clone. Hooks are disabled for every git call.

Blocking (subprocess): callers in the event loop run these methods in a thread.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from factorylm.models.monkey import CardWork, SprintCard

AUTHOR_NAME = "FactoryLM Monkey"
AUTHOR_EMAIL = "monkey@factorylm.invalid"
_GIT_TIMEOUT_S = 300.0
_DIFF_LIMIT = 60_000
# Lines of a git diff that name a path, and the modes a change may not create.
_DIFF_PATHS = re.compile(
    r"^(?:diff --git a/(\S+) b/(\S+)|--- (?:a/)?(\S+)|\+\+\+ (?:b/)?(\S+)"
    r"|rename (?:from|to) (\S+)|copy (?:from|to) (\S+))",
    re.M,
)
_FORBIDDEN_MODES = re.compile(
    r"^(?:new file mode|new mode|old mode|deleted file mode) 1[26]0000", re.M
)


_USERINFO = re.compile(r"(://)[^/@\s]+@")


def redact(text: str) -> str:
    """A URL's user and password (https://user:token@host/...) never reach a report."""
    return _USERINFO.sub(r"\1***@", text)


class GitError(RuntimeError):
    """A git command failed; the message has the command and git's own words."""


class WorkspaceUnusable(GitError):
    """Configuration, not a passing failure: no repository, no base branch, a closed dir."""


class InvalidChange(ValueError):
    """The model's change is refused before it touches the repository."""


def slug(name: str, limit: int = 40) -> str:
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return text[:limit].rstrip("-") or "card"


def short_id(card: SprintCard) -> str:
    candidate = card.short_id or card.url.rstrip("/").rsplit("/", 1)[-1] or card.id
    return re.sub(r"[^A-Za-z0-9]", "", candidate)[-8:] or card.id[-8:]


def branch_name(card: SprintCard) -> str:
    return f"monkey/{short_id(card)}-{slug(card.name)}"


def _check_path(path: str) -> str:
    if "\x00" in path or "\\" in path:
        raise InvalidChange(f"path {path!r} has a NUL or a backslash")
    pure = PurePosixPath(path)
    if pure.is_absolute() or not pure.parts:
        raise InvalidChange(f"path {path!r} must be relative to the repository root")
    if ".." in pure.parts:
        raise InvalidChange(f"path {path!r} leaves the repository")
    if any(part.lower() == ".git" for part in pure.parts):
        raise InvalidChange(f"path {path!r} is inside .git")
    return pure.as_posix()


def validate_change(work: CardWork, max_bytes: int) -> list[str]:
    """The paths the change touches; InvalidChange when it must not be applied."""
    has_diff, has_files = bool(work.diff.strip()), bool(work.files)
    if has_diff == has_files:
        raise InvalidChange("give exactly one of `diff` (a unified diff) or `files`")
    size = len(work.diff.encode()) + sum(len(f.content.encode()) for f in work.files)
    if size > max_bytes:
        raise InvalidChange(f"the change is {size:,} bytes; at most {max_bytes:,} are accepted")
    if has_files:
        paths = [_check_path(f.path) for f in work.files]
        if len(set(paths)) != len(paths):
            raise InvalidChange("a file is given twice")
        return paths
    if "GIT binary patch" in work.diff or "Binary files " in work.diff:
        raise InvalidChange("binary patches are not accepted")
    if _FORBIDDEN_MODES.search(work.diff):
        raise InvalidChange("the diff creates a symlink or a submodule")
    found: list[str] = []
    for match in _DIFF_PATHS.finditer(work.diff):
        for path in match.groups():
            if path and path != "/dev/null":
                found.append(_check_path(path))
    if not found:
        raise InvalidChange("the diff names no file (expected `--- a/PATH` / `+++ b/PATH`)")
    return sorted(set(found))


@dataclass(frozen=True)
class Applied:
    commit: str
    diff: str
    diff_stat: str


class GitWorkspace:
    def __init__(self, remote: str, base_branch: str, root: Path) -> None:
        self.remote = remote
        self.shown = redact(remote)  # what comments, histories and the database see
        self.base = base_branch
        self.root = root
        self.git_dir = root / "repo.git"

    # -- plumbing ----------------------------------------------------------------------------

    def git(self, *args: str, cwd: Path | None = None, stdin: str | None = None) -> str:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "LANG": "C.UTF-8",
        }
        command = [
            "git",
            "-c", "core.hooksPath=/dev/null",
            "-c", f"user.name={AUTHOR_NAME}",
            "-c", f"user.email={AUTHOR_EMAIL}",
            "-c", "init.defaultBranch=main",
        ]  # fmt: skip
        if cwd is None:
            command += [f"--git-dir={self.git_dir}"]
        try:
            done = subprocess.run(
                [*command, *args],
                cwd=cwd or self.root,
                env=env,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=_GIT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise GitError(f"git {args[0]} timed out after {_GIT_TIMEOUT_S:g} s") from exc
        if done.returncode != 0:
            words = redact((done.stderr or done.stdout).strip()[-2000:])
            raise GitError(f"git {' '.join(args[:3])} failed: {words}")
        return done.stdout

    def ensure_clone(self) -> None:
        if not self.remote:
            raise WorkspaceUnusable(
                "no repository configured: set FACTORYLM_MONKEY_REPO to a path or URL the "
                "Monkey can clone and push to"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        # The sandbox's uid must reach the worktrees below (checks run as that uid).
        os.chmod(self.root, 0o755)
        closed = [p for p in self.root.resolve().parents if not os.stat(p).st_mode & 0o001]
        if closed:
            raise WorkspaceUnusable(
                f"the Monkey's workspace {self.root} is below {closed[0]}, which other users "
                "cannot enter: the sandboxed checks could not reach their worktree "
                "(set FACTORYLM_MONKEY_WORKSPACE_DIR elsewhere, or chmod o+x it)"
            )
        if not (self.git_dir / "HEAD").exists():
            self.git("init", "--bare", "-q", str(self.git_dir), cwd=self.root)
            self.git("remote", "add", "origin", self.remote)
        elif self.git("remote", "get-url", "origin").strip() != self.remote:
            self.git("remote", "set-url", "origin", self.remote)
        self.fetch()

    def fetch(self) -> None:
        self.git("fetch", "-q", "--prune", "origin", "+refs/heads/*:refs/remotes/origin/*")

    def rev(self, ref: str) -> str:
        return self.git("rev-parse", "--verify", f"{ref}^{{commit}}").strip()

    def remote_branch(self, branch: str) -> str | None:
        try:
            return self.rev(f"refs/remotes/origin/{branch}")
        except GitError:
            return None

    def base_commit(self) -> str:
        try:
            return self.rev(f"refs/remotes/origin/{self.base}")
        except GitError as exc:
            raise WorkspaceUnusable(
                f"the repository {self.shown} has no branch {self.base!r} "
                "(FACTORYLM_MONKEY_BASE_BRANCH)"
            ) from exc

    # -- reading at a commit (the Cartographer) ----------------------------------------------

    def tree(self, commit: str) -> list[tuple[str, str, int]]:
        """(path, blob, size) of every regular file at the commit."""
        found = []
        for line in self.git("ls-tree", "-r", "-l", "-z", commit).split("\0"):
            if not line:
                continue
            meta, _, path = line.partition("\t")
            mode, kind, blob, size = meta.split()
            if kind == "blob" and mode in ("100644", "100755"):
                found.append((path, blob, int(size)))
        return found

    def read(self, commit: str, path: str, limit: int = 200_000) -> str | None:
        """The file's text at the commit, or None when it is binary or too large."""
        try:
            size = int(self.git("cat-file", "-s", f"{commit}:{path}").strip())
        except GitError:
            return None
        if size > limit:
            return None
        raw = subprocess.run(
            ["git", f"--git-dir={self.git_dir}", "cat-file", "blob", f"{commit}:{path}"],
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        ).stdout
        if b"\0" in raw[:8192]:
            return None
        return raw.decode("utf-8", errors="replace")

    # -- an attempt --------------------------------------------------------------------------

    def worktree_path(self, branch: str) -> Path:
        return self.root / "worktrees" / branch.replace("/", "-")

    def fresh_worktree(self, branch: str, base_commit: str) -> Path:
        """The branch reset to the base commit, in a new worktree (the last one deleted)."""
        path = self.worktree_path(branch)
        if path.exists():
            shutil.rmtree(path)
        self.git("worktree", "prune")
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o755)
        self.git("worktree", "add", "-q", "-f", "-B", branch, str(path), base_commit)
        return path

    def apply(self, worktree: Path, work: CardWork, max_bytes: int) -> list[str]:
        """Apply the model's change in the worktree and stage it; InvalidChange or GitError
        when it cannot be, with the reason."""
        paths = validate_change(work, max_bytes)
        if work.diff.strip():
            text = work.diff if work.diff.endswith("\n") else work.diff + "\n"
            with tempfile.NamedTemporaryFile("w", suffix=".patch", delete=False) as patch:
                patch.write(text)
            try:
                # --recount: models miscount hunk lengths; the context lines still must match.
                self.git(
                    "apply", "--recount", "--index", "--whitespace=nowarn", patch.name, cwd=worktree
                )
            except GitError as exc:
                raise InvalidChange(f"the diff does not apply: {exc}") from exc
            finally:
                os.unlink(patch.name)
            return paths
        root = worktree.resolve()
        for change, path in zip(work.files, paths, strict=True):
            target = root.joinpath(*PurePosixPath(path).parts)
            probe = root
            for part in PurePosixPath(path).parts[:-1]:
                probe = probe / part
                if probe.is_symlink() or (probe.exists() and not probe.is_dir()):
                    raise InvalidChange(f"{path}: {probe.relative_to(root)} is not a directory")
            if target.is_symlink():
                raise InvalidChange(f"{path} is a symlink in the repository")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(change.content, encoding="utf-8")
        self.git("add", "--", *paths, cwd=worktree)
        return paths

    def commit(self, worktree: Path, base_commit: str, message: str) -> Applied:
        if not self.git("diff", "--cached", "--name-only", cwd=worktree).strip():
            raise InvalidChange("the change leaves every file as it was")
        self.git("commit", "-q", "--no-verify", "-F", "-", cwd=worktree, stdin=message)
        commit = self.git("rev-parse", "HEAD", cwd=worktree).strip()
        return Applied(commit, self.diff(base_commit, commit), self.diff_stat(base_commit, commit))

    def diff(self, base: str, commit: str) -> str:
        text = self.git("diff", "--no-color", base, commit)
        return text if len(text) <= _DIFF_LIMIT else text[:_DIFF_LIMIT] + "\n…(diff truncated)\n"

    def branch_change(self, base: str, branch_commit: str) -> str:
        """What the branch changed since it left the base (the base may have moved on)."""
        text = self.git("diff", "--no-color", f"{base}...{branch_commit}")
        return text if len(text) <= _DIFF_LIMIT else text[:_DIFF_LIMIT] + "\n…(diff truncated)\n"

    def diff_stat(self, base: str, commit: str) -> str:
        return self.git("diff", "--stat", "--no-color", base, commit).rstrip()

    def discard(self, branch: str) -> None:
        path = self.worktree_path(branch)
        if path.exists():
            shutil.rmtree(path)
        self.git("worktree", "prune")

    # -- review ------------------------------------------------------------------------------

    def push(self, branch: str, commit: str) -> None:
        # Forced: a card sent back from review is redone from the current base.
        self.git("push", "-q", "origin", f"+{commit}:refs/heads/{branch}")

    def branches_for(self, card_short_id: str) -> list[str]:
        prefix = f"refs/remotes/origin/monkey/{card_short_id}-"
        out = self.git("for-each-ref", "--format=%(refname)", prefix.rstrip("-") + "*")
        found = [r for r in out.split() if r.startswith(prefix)]
        return [r.removeprefix("refs/remotes/origin/") for r in found]

    def merge(self, branch: str, message: str) -> str:
        """Merge the pushed branch into the base and push the base; the merge commit."""
        self.fetch()
        path = self.root / "worktrees" / "merge"
        if path.exists():
            shutil.rmtree(path)
        self.git("worktree", "prune")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.git("worktree", "add", "-q", "--detach", str(path), f"origin/{self.base}")
        try:
            # A conflict leaves the base as it was: the worktree is deleted below, unpushed.
            self.git("merge", "--no-ff", "-q", "-m", message, f"origin/{branch}", cwd=path)
            commit = self.git("rev-parse", "HEAD", cwd=path).strip()
            self.git("push", "-q", "origin", f"{commit}:refs/heads/{self.base}")
            return commit
        finally:
            shutil.rmtree(path, ignore_errors=True)
            self.git("worktree", "prune")
