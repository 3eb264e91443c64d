"""The model's change is refused before it touches the repository when it leaves the
repository, reaches into .git, makes a symlink, is binary or too large, or is not one kind."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from activities.monkey import card_prompt
from activities.monkey_workspace import (
    GitError,
    GitWorkspace,
    InvalidChange,
    branch_name,
    redact,
    validate_change,
)
from factorylm.models.monkey import CardWork, FileChange, RelevantFile, RepoContext, SprintCard

DIFF = "--- a/src/app.py\n+++ b/src/app.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"


def files(*paths: str) -> CardWork:
    return CardWork(summary="s", files=[FileChange(path=p, content="x") for p in paths])


def test_a_diff_or_files_inside_the_repository_are_accepted() -> None:
    assert validate_change(CardWork(summary="s", diff=DIFF), 10_000) == ["src/app.py"]
    assert validate_change(files("a.py", "pkg/b.py"), 10_000) == ["a.py", "pkg/b.py"]


@pytest.mark.parametrize(
    ("work", "reason"),
    [
        (files("../x.py"), "leaves the repository"),
        (files("/etc/passwd"), "relative"),
        (files(".git/hooks/post-commit"), "inside .git"),
        (files("pkg/.GIT/config"), "inside .git"),
        (files("a.py", "a.py"), "twice"),
        (CardWork(summary="s"), "exactly one"),
        (CardWork(summary="s", diff=DIFF, files=[FileChange(path="a", content="")]), "exactly one"),
        (CardWork(summary="s", diff=DIFF.replace("a/src/app.py", "a/../../etc/x")), "leaves"),
        (CardWork(summary="s", diff="diff --git a/l b/l\nnew file mode 120000\n"), "symlink"),
        (CardWork(summary="s", diff="diff --git a/s b/s\nnew file mode 160000\n"), "submodule"),
        (CardWork(summary="s", diff="diff --git a/b b/b\nGIT binary patch\n"), "binary"),
        (CardWork(summary="s", diff="just some prose"), "names no file"),
        (CardWork(summary="s", diff=DIFF + "+" * 20_000), "at most"),
    ],
)
def test_a_change_is_refused_with_its_reason(work: CardWork, reason: str) -> None:
    with pytest.raises(InvalidChange, match=reason):
        validate_change(work, 10_000)


def test_the_branch_is_named_after_the_card() -> None:
    card = SprintCard(id="6b0e8988aaaa", name="Fix the add() function!", short_id="AbCd1234")
    assert branch_name(card) == "monkey/AbCd1234-fix-the-add-function"


def test_a_retry_prompt_carries_the_diff_the_failure_and_the_files() -> None:
    card = SprintCard(id="c", name="Fix it", success_checks=["python3 -m unittest"])
    context = RepoContext(
        commit="0123456789abcdef",
        files=2,
        map_text="calc.py (10 B); functions add",
        relevant=[RelevantFile(path="calc.py", score=1.0, reason="named on the card")],
    )
    prompt = card_prompt(
        card,
        context,
        [("calc.py", "named on the card", "def add(a, b): return a - b\n")],
        feedback=["Use the + operator."],
        previous_diff="-    return a\n+    return b\n",
        previous_failure="FAIL `python3 -m unittest`: exit 1",
    )
    assert prompt.startswith("Card: Fix it")
    for part in (
        "- python3 -m unittest",
        "Repository map at commit 0123456789ab (2 files):",
        "=== calc.py (named on the card) ===\ndef add(a, b): return a - b",
        "> Use the + operator.",
        "Your previous attempt failed. Its change was:\n-    return a\n+    return b",
        "What failed:\nFAIL `python3 -m unittest`: exit 1",
        "different approach",
    ):
        assert part in prompt, part


def test_a_remote_urls_credentials_never_reach_a_message() -> None:
    assert redact("https://bot:s3cret@git.example/plant.git") == "https://***@git.example/plant.git"
    root = Path(tempfile.mkdtemp(prefix="factorylm-redact-test-"))
    os.chmod(root, 0o755)  # reachable by the sandbox uid, so the clone is what fails
    workspace = GitWorkspace("https://bot:s3cret@127.0.0.1:9/plant.git", "main", root / "ws")
    assert "s3cret" not in workspace.shown
    with pytest.raises(GitError) as failed:
        workspace.ensure_clone()  # nothing listens on port 9: git's own error, redacted
    shutil.rmtree(root)
    assert "git fetch" in str(failed.value) and "s3cret" not in str(failed.value)
