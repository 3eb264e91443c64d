"""`factorylm demo --scenario monkey`: the Monkey works a local Trello board in a real git
repository. The repository is a small calculator with two really failing tests; the board has
two cards that fix them (one right first time, one whose first attempt fails its check and
whose retry passes) and one card without success checks (Blocked, asking for them). The local
Anthropic API (dev/fakes/anthropic.py) plays the model through the official client: the
changes are scripted, everything else — git, the sandboxed checks, Trello through py-trello,
the budget, Temporal — is the product's own code."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporalio.worker import Worker

from dev.demo.environment import Demo
from dev.fakes.anthropic import fake_anthropic
from dev.fakes.scripted import Reply, Script
from dev.fakes.server import LocalServer
from dev.fakes.trello import FakeTrello
from factorylm.models.monkey import LISTS, MonkeyInput
from factorylm.settings import Settings
from factorylm.trello.board import TrelloBoard
from factorylm.trello.plan import PlanCard
from workers.agents import monkey_activities
from workflows.monkey import MonkeyWorkflow

DEMO_KEY = "sk-ant-local-demo"

CALC = '''"""A tiny calculator: the demo repository the Monkey works on."""


def add(a: float, b: float) -> float:
    return a - b


def greet(name: str) -> str:
    return "hi " + name
'''
TEST_CALC = """import unittest

from calc import add


class AddTest(unittest.TestCase):
    def test_adds(self) -> None:
        self.assertEqual(add(2, 3), 5)


if __name__ == "__main__":
    unittest.main()
"""
TEST_GREET = """import unittest

from calc import greet


class GreetTest(unittest.TestCase):
    def test_greets_politely(self) -> None:
        self.assertEqual(greet("Ann"), "Good morning, Ann.")


if __name__ == "__main__":
    unittest.main()
"""
DEMO_FILES = {
    "calc.py": CALC,
    "tests/__init__.py": "",
    "tests/test_calc.py": TEST_CALC,
    "tests/test_greet.py": TEST_GREET,
    "README.md": "# Calculator\n\nThe Monkey demo's repository.\n",
}

FIX_ADD = """diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -2,7 +2,7 @@


 def add(a: float, b: float) -> float:
-    return a - b
+    return a + b


 def greet(name: str) -> str:
"""

CARDS = [
    PlanCard(
        name="Fix the add function",
        description="calc.py's add() subtracts; tests/test_calc.py shows it.",
        labels=["Autonomous", "Critical Path"],
        estimated_tokens=3000,
        checklist=["add() returns the sum"],
        success_checks=["python3 -m unittest -q tests.test_calc"],
    ),
    PlanCard(
        name="Greet politely",
        description="greet() should say 'Good morning, NAME.' as tests/test_greet.py expects.",
        labels=["Autonomous"],
        estimated_tokens=3000,
        checklist=["greet() is polite"],
        success_checks=["python3 -m unittest -q tests.test_greet"],
    ),
    PlanCard(
        name="Document the calculator",
        description="Write a usage section in README.md.",
        labels=["Autonomous"],
        estimated_tokens=2000,
    ),
]


def play_the_model(request: dict[str, Any]) -> Reply:
    """The scripted model: the answer depends on the card and on whether it is a retry."""
    prompt = str(request["messages"][0]["content"])
    if prompt.startswith("Card: Fix the add function"):
        return Reply(body={"summary": "add() adds instead of subtracting.", "diff": FIX_ADD})
    if prompt.startswith("Card: Greet politely"):
        retry = "previous attempt failed" in prompt
        line = '    return f"Good morning, {name}."' if retry else '    return "Hello, " + name'
        content = CALC.replace('    return "hi " + name', line)
        summary = "greet() says good morning." if retry else "greet() says hello."
        return Reply(body={"summary": summary, "files": [{"path": "calc.py", "content": content}]})
    return Reply(status=400, error_type="invalid_request_error", body="unexpected card")


def seed_repository(root: Path, files: dict[str, str], branch: str = "main") -> Path:
    """A bare repository at root/NAME.git whose `branch` holds `files`: the Monkey's remote."""
    work = root / "seed"
    remote = root / "remote.git"
    work.mkdir(parents=True)
    for path, content in files.items():
        target = work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Plant Engineer",
        "GIT_AUTHOR_EMAIL": "engineer@plant.invalid",
        "GIT_COMMITTER_NAME": "Plant Engineer",
        "GIT_COMMITTER_EMAIL": "engineer@plant.invalid",
    }
    for args in (
        ["init", "-q", "-b", branch, str(work)],
        ["-C", str(work), "add", "-A"],
        ["-C", str(work), "commit", "-q", "-m", "The calculator, with two failing tests"],
        ["clone", "-q", "--bare", str(work), str(remote)],
    ):
        subprocess.run(["git", *args], env=env, check=True, capture_output=True)
    return remote


def _board(settings: Settings) -> TrelloBoard:
    board = TrelloBoard.create(settings, "FactoryLM demo sprint")
    board.ensure_structure()
    for card in CARDS:
        board.add_card(card, "Current Sprint")
    return board


def _branch_head(remote: Path, branch: str) -> str:
    done = subprocess.run(
        ["git", f"--git-dir={remote}", "rev-parse", f"refs/heads/{branch}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


async def run_monkey_scenario(demo: Demo, say: Callable[[str], None]) -> dict[str, Any]:
    assert demo.client is not None and demo.stack is not None and demo.stack.pool is not None
    pool, client = demo.stack.pool, demo.client
    # Outside any 0700 directory: the sandboxed checks run as an unprivileged uid.
    root = Path(tempfile.mkdtemp(prefix="factorylm-monkey-demo-"))
    os.chmod(root, 0o755)
    remote = await asyncio.to_thread(seed_repository, root, DEMO_FILES)
    trello, script = FakeTrello(), Script(default=play_the_model)
    servers = [LocalServer(trello.app()), fake_anthropic(script, DEMO_KEY)]
    for server in servers:
        await server.start()
    trello_server, anthropic_server = servers
    try:
        settings = Settings.model_validate(
            demo.settings.model_copy(
                update={
                    "trello_api_key": trello.api_key,
                    "trello_token": trello.token,
                    "trello_app_secret": trello.app_secret,
                    "trello_base_url": trello_server.url,
                    "anthropic_api_key": DEMO_KEY,
                    "anthropic_base_url": anthropic_server.url,
                    "gemini_api_key": None,
                    "monkey_repo": str(remote),
                    "monkey_base_branch": "main",
                    "monkey_workspace_dir": root / "workspace",
                    "task_queue": f"{demo.settings.task_queue}-monkey-demo",
                    "monkey_workflow_id": f"monkey-demo-{uuid.uuid4().hex[:8]}",
                    # The demo database is shared with other scenarios' LLM calls: the demo
                    # budgets the Monkey's own tokens only, 50 000 a day.
                    "budget_hourly_tokens": 0,
                    "budget_daily_tokens": 0,
                    "budget_agent_daily_tokens": {"monkey": 50_000},
                }
            ).model_dump()
        )
        say(f"repository {remote}: calc.py with two failing tests (tests/test_calc.py, "
            "tests/test_greet.py)")  # fmt: skip
        say(f"Trello through py-trello against a local Trello API on {trello_server.url}")
        say(f"the model: the local Anthropic API on {anthropic_server.url} plays it with "
            "scripted changes (no real model is called); git, the sandboxed checks and the "
            "board are real")  # fmt: skip
        board = await asyncio.to_thread(_board, settings)
        say(f"board {board.board_id}: {len(CARDS)} cards in Current Sprint")
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[MonkeyWorkflow],
            activities=monkey_activities(pool, settings),
        )
        async with worker:
            handle = await client.start_workflow(
                MonkeyWorkflow.run,
                MonkeyInput(
                    board_id=board.board_id,
                    recipients=list(settings.approvers),
                    stop_when_idle=True,
                ),
                id=settings.monkey_workflow_id,
                task_queue=settings.task_queue,
            )
            say(f"MonkeyWorkflow {handle.id} started")
            summary = await asyncio.wait_for(handle.result(), timeout=300)
        for name in LISTS:
            for card in trello.cards_in(board.board_id, name):
                say(f"  {name:15} {card['name']}")
        attempts = await pool.fetch(
            """SELECT card_name, attempt, status, diff_stat FROM monkey_runs
               WHERE workflow_id = $1 ORDER BY card_name, attempt""",
            handle.id,
        )
        for row in attempts:
            stat = row["diff_stat"].strip().splitlines()[-1:] or ["no change"]
            say(
                f"  attempt {row['attempt']} on {row['card_name']!r}: {row['status']} ({stat[0].strip()})"
            )
        branches: list[dict[str, Any]] = []
        for b in summary.branches:
            # Passed means: every check exited 0 on this commit, and the remote has it.
            passed = b.checks_passed and _branch_head(remote, b.name) == b.commit
            branches.append({"name": b.name, "commit": b.commit, "checks_passed": passed})
            say(f"  branch {b.name} at {b.commit[:12]} (checks passed: {passed})")
        say(f"check by hand: git clone {remote} calc && cd calc && git checkout BRANCH && "
            "python3 -m unittest")  # fmt: skip
        return {
            "status": "completed" if summary.status == "idle" else summary.status,
            "cards_done": summary.cards_done,
            "cards_blocked": summary.cards_blocked,
            "branches": branches,
            "repo": str(remote),
            "tokens_used": summary.tokens_used,
            "model": "local Anthropic API (scripted)",
        }
    finally:
        for server in servers:
            await server.stop()
