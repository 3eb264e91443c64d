"""MonkeyWorkflow on the real Temporal server, with py-trello against the local Trello, the
anthropic client against the fake Messages API, WhatsApp through the local Twilio, a real git
repository (a local bare repository as the remote), checks under real bubblewrap, and the
real database: the card flow, retry then Blocked, human alerts, budget waits, continue-as-new,
pause/resume/stop, and the signed Trello webhook waking the loop."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fakes.anthropic_api import fake_anthropic
from fakes.server import FakeServer, Reply, Script
from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from api.app import create_app
from api.trello import callback_url
from dev.demo.monkey import seed_repository
from dev.fakes.server import LocalServer
from dev.fakes.trello import FakeTrello
from dev.fakes.twilio import FakeTwilio
from factorylm.models.monkey import MonkeyInput, MonkeyReportInput, MonkeyStatus, MonkeySummary
from factorylm.settings import Settings
from factorylm.trello.board import TrelloBoard, trello_client
from factorylm.trello.plan import PlanCard
from factorylm.trello.webhook import SIGNATURE_HEADER, sign
from factorylm.waiting import wait_for
from helpers import free_port, until
from workers.agents import monkey_activities
from workflows.monkey import MonkeyReportWorkflow, MonkeyWorkflow

ENGINEER = "whatsapp:+15550100001"
# Budget windows are real clock windows: each test starts from an empty day, alerts unsent.
CLEAN = """DELETE FROM llm_usage; DELETE FROM budget_refusals; DELETE FROM monkey_runs;
           DELETE FROM notifications WHERE dedup_key LIKE 'budget/%';
           DELETE FROM outbound_messages WHERE idem_key LIKE 'budget/%'"""
REPO_FILES = {
    "README.md": "# Test repository\n",
    "src/app.py": "def answer() -> int:\n    return 41\n",
}


def claude(request: dict[str, Any]) -> Reply:
    """Plays Claude: the answer depends on the card and on whether it is a retry."""
    prompt = request["messages"][0]["content"]
    retry = "previous attempt failed" in prompt
    if "Card: Critical fix" in prompt:
        text = "fixed\n" if retry else "broken\n"
        return Reply(
            body={"summary": "wrote fix.txt", "files": [{"path": "fix.txt", "content": text}]}
        )
    if "Card: Hopeless" in prompt:
        return Reply(body={"summary": "tried", "files": [{"path": "x.txt", "content": "nope"}]})
    return Reply(body={"summary": "wrote out.txt", "files": [{"path": "out.txt", "content": "ok"}]})


@dataclass
class Rig:
    settings: Settings
    client: Client
    pool: asyncpg.Pool
    trello: FakeTrello
    twilio: FakeTwilio
    script: Script
    board: TrelloBoard
    api_url: str
    remote: Path

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", f"--git-dir={self.remote}", *args], capture_output=True, text=True, check=True
        ).stdout

    async def card(self, name: str, labels: list[str], checks: list[str], tokens: int = 300) -> str:
        return await asyncio.to_thread(
            self.board.add_card,
            PlanCard(
                name=name,
                description=f"Do {name}.",
                labels=labels,
                estimated_tokens=tokens,
                checklist=["do it", "check it"],
                success_checks=checks,
            ),
            "Current Sprint",
        )

    async def start(self, **overrides: Any) -> WorkflowHandle[Any, MonkeySummary]:
        params = MonkeyInput(
            board_id=self.board.board_id, recipients=[ENGINEER], idle_poll_s=600, **overrides
        )
        return await self.client.start_workflow(
            MonkeyWorkflow.run,
            params,
            id=self.settings.monkey_workflow_id,
            task_queue=self.settings.task_queue,
        )

    async def status(self, handle: WorkflowHandle[Any, Any]) -> MonkeyStatus:
        result: MonkeyStatus = await handle.query(MonkeyWorkflow.status)
        return result

    def list_of(self, card_id: str) -> str:
        return self.trello.list_of(card_id)


@pytest.fixture
def repo_root() -> Iterator[Path]:
    # Not under pytest's tmp_path (0700 parents): the sandboxed checks run as another uid.
    root = Path(tempfile.mkdtemp(prefix="factorylm-monkey-test-"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def rig(
    settings: Settings, client: Client, pool: asyncpg.Pool, repo_root: Path
) -> AsyncIterator[Rig]:
    await pool.execute(CLEAN)
    remote = await asyncio.to_thread(seed_repository, repo_root, REPO_FILES)
    trello, twilio, script = FakeTrello(), FakeTwilio(), Script(default=claude)
    trello_server, twilio_server = LocalServer(trello.app()), LocalServer(twilio.app())
    anthropic: FakeServer = fake_anthropic(script)
    for server in (trello_server, twilio_server, anthropic):
        await server.start()
    queue = f"monkey-{uuid.uuid4().hex[:8]}"
    port = free_port()
    s = Settings.model_validate(
        settings.model_copy(
            update={
                "task_queue": queue,
                "approvers": [ENGINEER],
                "api_port": port,
                "public_url": f"http://127.0.0.1:{port}",
                "twilio_account_sid": twilio.account_sid,
                "twilio_auth_token": SecretStr(twilio.auth_token),
                "twilio_api_base_url": twilio_server.url,
                "trello_api_key": trello.api_key,
                "trello_token": trello.token,
                "trello_app_secret": trello.app_secret,
                "trello_base_url": trello_server.url,
                "anthropic_api_key": "sk-ant-test",
                "anthropic_base_url": anthropic.url,
                "monkey_workflow_id": f"monkey-{queue}",
                "budget_hourly_tokens": 0,
                "budget_daily_tokens": 50_000,
                "monkey_repo": str(remote),
                "monkey_workspace_dir": repo_root / "workspace",
            }
        ).model_dump()
    )
    board = TrelloBoard(trello_client(s), trello.add_board("Monkey test"))
    await asyncio.to_thread(board.ensure_structure)
    worker = Worker(
        client,
        task_queue=queue,
        workflows=[MonkeyWorkflow, MonkeyReportWorkflow],
        activities=monkey_activities(pool, s),
    )
    api = LocalServer(create_app(s, client, pool), port=port)
    await api.start()
    async with worker:
        yield Rig(s, client, pool, trello, twilio, script, board, api.url, remote)
    await api.stop()
    for server in (trello_server, twilio_server, anthropic):
        await server.stop()
    await pool.execute(CLEAN)


async def test_the_monkey_works_the_sprint_into_reviewable_branches(
    rig: Rig, record_history: Any
) -> None:
    plain = await rig.card("Plain task", ["Autonomous"], ["test -f out.txt"])
    hopeless = await rig.card("Hopeless", ["Autonomous"], ["grep -q never x.txt"])
    critical = await rig.card(
        "Critical fix", ["Autonomous", "Critical Path"], ["grep -q fixed fix.txt"]
    )
    human = await rig.card("Wire the PLC", ["Human Action Required", "Autonomous"], [])
    parked = await rig.card("Not for the Monkey", ["Integration"], [])
    handle = await rig.start(stop_when_idle=True, continue_after_cycles=2)
    summary = await asyncio.wait_for(handle.result(), 120)
    await record_history(handle, "monkey_sprint_after_continue_as_new")
    assert (summary.cards_done, summary.cards_blocked, summary.human_alerts) == (2, 1, 1)
    assert summary.status == "idle" and summary.budget_refusals == 0
    # Two cycles per run: three cards and the idle look are four cycles, so two runs.
    assert summary.cycles == 4 and summary.runs == 2
    assert rig.list_of(critical) == rig.list_of(plain) == "Review Needed"
    assert rig.list_of(hopeless) == "Blocked"
    assert rig.list_of(human) == rig.list_of(parked) == "Current Sprint"
    # Critical Path first, then board position; the retry carried the diff and the failure.
    prompts = [r["messages"][0]["content"] for r in rig.script.requests]
    assert prompts[0].startswith("Card: Critical fix") and "previous attempt failed" in prompts[1]
    assert "FAIL `grep -q fixed fix.txt`" in prompts[1] and "+broken" in prompts[1]
    assert prompts[2].startswith("Card: Plain task")
    # The prompt has the Cartographer's map and the relevant files' contents.
    assert "src/app.py" in prompts[0] and "functions answer" in prompts[0]
    assert "=== src/app.py" in prompts[0] and "return 41" in prompts[0]
    # The branches are in the remote, each one commit on the base by the Monkey.
    branches = {b.name: b for b in summary.branches}
    assert len(branches) == 2 and all(b.checks_passed for b in branches.values())
    (fix_branch,) = [n for n in branches if n.endswith("-critical-fix")]
    assert fix_branch.startswith("monkey/")
    head = branches[fix_branch].commit
    assert rig.git("rev-parse", f"refs/heads/{fix_branch}").strip() == head
    assert rig.git("show", f"{head}:fix.txt") == "fixed\n"
    assert rig.git("rev-list", "--count", f"main..{head}").strip() == "1"
    author, message = rig.git("log", "-1", "--format=%an%n%B", head).split("\n", 1)
    assert author == "FactoryLM Monkey"
    assert rig.trello.cards[critical]["url"] in message
    assert rig.git("show", "main:README.md") == "# Test repository\n"  # main untouched
    hopeless_comments = rig.trello.comments(hopeless)
    assert len(hopeless_comments) == 2 and "Moved to Blocked" in hopeless_comments[1]
    assert "Last diff:" in hopeless_comments[1] and "+nope" in hopeless_comments[1]
    review = rig.trello.comments(critical)
    assert "attempt 1 failed" in review[0] and "PASS `grep -q fixed fix.txt`" in review[1]
    assert "anthropic claude" in review[1]
    assert f"Branch: {fix_branch}" in review[1] and f"Commit: {head}" in review[1]
    assert "fix.txt | 1 +" in review[1] and "Tokens: " in review[1]
    alerts = [m for m in rig.twilio.to(ENGINEER) if "Wire the PLC" in m.body]
    assert len(alerts) == 1 and "Human Action Required" in alerts[0].body
    used = await rig.pool.fetchval(
        "SELECT sum(input_tokens + output_tokens) FROM llm_usage WHERE workflow_id = $1",
        handle.id,
    )
    assert summary.tokens_used == used > 0
    runs = await rig.pool.fetch(
        """SELECT card_name, attempt, passed, status, commit_sha, reserved_tokens,
                  input_tokens + output_tokens AS spent
           FROM monkey_runs WHERE workflow_id = $1 ORDER BY id""",
        handle.id,
    )
    assert [(r["card_name"], r["attempt"], r["passed"]) for r in runs] == [
        ("Critical fix", 1, False),
        ("Critical fix", 2, True),
        ("Plain task", 1, True),
        ("Hopeless", 1, False),
        ("Hopeless", 2, False),
    ]
    assert runs[1]["commit_sha"] == head and all(r["spent"] > 0 for r in runs)
    # The first card reserved its estimate; later ones what the first really cost, if more.
    assert runs[0]["reserved_tokens"] == 300
    assert runs[2]["reserved_tokens"] == max(300, runs[0]["spent"] + runs[1]["spent"])


async def test_over_budget_it_waits_for_the_next_window(rig: Rig) -> None:
    huge = await rig.card("Huge", ["Autonomous"], ["test -f out.txt"], tokens=60_000)
    card = await rig.card("Plain task", ["Autonomous"], ["test -f out.txt"], tokens=2_000)
    await rig.pool.execute(
        """INSERT INTO llm_usage (agent, provider, model, input_tokens, output_tokens, ok)
           VALUES ('weaver', 'anthropic', 'claude-sonnet-4-6', 30000, 19000, true)"""
    )
    handle = await rig.start()
    status = await wait_for(
        "the Monkey waiting for the budget",
        lambda: _status_is(rig, handle, "waiting_for_budget"),
        timeout_s=30,
    )
    assert status.budget_retry_at is not None and status.counters.budget_refusals == 2
    # The card larger than the whole day was blocked with a reason, not waited for.
    assert rig.list_of(huge) == "Blocked"
    assert "larger than the whole day budget" in rig.trello.comments(huge)[0]
    assert rig.list_of(card) == "Current Sprint" and rig.script.requests == []
    assert any("98 % of the daily budget" in m.body for m in rig.twilio.to(ENGINEER))
    # A new window: yesterday's spend no longer counts. A wake makes the Monkey look again.
    await rig.pool.execute("DELETE FROM llm_usage")
    await handle.signal(MonkeyWorkflow.wake, "test: new window")
    await wait_for("the card reviewed", lambda: rig.list_of(card) == "Review Needed")
    await handle.signal(MonkeyWorkflow.stop)
    summary = await asyncio.wait_for(handle.result(), 30)
    assert summary.status == "stopped" and summary.cards_done == 1
    assert summary.budget_refusals == 2


async def test_webhook_pause_resume_and_forgery(rig: Rig) -> None:
    handle = await rig.start()
    await wait_for("the Monkey idle", lambda: _status_is(rig, handle, "idle"), timeout_s=30)
    async with httpx.AsyncClient(base_url=rig.api_url) as http:
        assert (await http.head("/webhooks/trello")).status_code == 200
        body = json.dumps({"action": {"type": "updateCard", "data": {"card": {"id": "x"}}}})
        forged = await http.post(
            "/webhooks/trello",
            content=body,
            headers={
                SIGNATURE_HEADER: sign("not-the-secret", body.encode(), callback_url(rig.settings))
            },
        )
        assert forged.status_code == 403
        unsigned = await http.post("/webhooks/trello", content=body)
        assert unsigned.status_code == 403
    # Trello's own flow: a webhook registered through py-trello, a person drags a card.
    await asyncio.to_thread(
        trello_client(rig.settings).create_hook, callback_url(rig.settings), rig.board.board_id
    )
    card = await asyncio.to_thread(
        rig.board.add_card,
        PlanCard(name="Plain task", labels=["Autonomous"], success_checks=["test -f out.txt"]),
    )
    await handle.signal(MonkeyWorkflow.pause)
    await wait_for("paused", lambda: _status_is(rig, handle, "paused"))
    rig.trello.move_card(card, "Current Sprint")  # sends the signed webhook
    await wait_for("the webhook delivered", lambda: rig.trello._pending == set())
    assert rig.list_of(card) == "Current Sprint"  # paused: nothing moves
    await handle.signal(MonkeyWorkflow.resume)
    await wait_for("the card reviewed", lambda: rig.list_of(card) == "Review Needed", timeout_s=30)
    # Idle again until the next card arrives: the webhook, not the 10-minute poll, wakes it.
    await wait_for("idle again", lambda: _status_is(rig, handle, "idle"))
    second = await asyncio.to_thread(
        rig.board.add_card,
        PlanCard(name="Second", labels=["Autonomous"], success_checks=["test -f out.txt"]),
    )
    rig.trello.move_card(second, "Current Sprint")
    await wait_for(
        "the webhook woke it", lambda: rig.list_of(second) == "Review Needed", timeout_s=30
    )
    await handle.signal(MonkeyWorkflow.stop)
    assert (await asyncio.wait_for(handle.result(), 30)).cards_done == 2


async def test_progress_report(rig: Rig, record_history: Any) -> None:
    handle = await rig.client.start_workflow(
        MonkeyReportWorkflow.run,
        MonkeyReportInput(board_id=rig.board.board_id, recipients=[ENGINEER], report_key=""),
        id=f"monkey-report-{uuid.uuid4().hex[:6]}",
        task_queue=rig.settings.task_queue,
    )
    assert await handle.result() is True
    await record_history(handle, "monkey_report")
    (report,) = [m for m in rig.twilio.to(ENGINEER) if "progress report" in m.body]
    assert "Current Sprint 0" in report.body and "Budget this day" in report.body


async def _status_is(rig: Rig, handle: WorkflowHandle[Any, Any], state: str) -> MonkeyStatus | None:
    status = await rig.status(handle)
    return status if status.state == state else None


async def test_a_card_without_checks_is_blocked_asking_for_them(rig: Rig) -> None:
    card = await rig.card("Vague idea", ["Autonomous"], [])
    handle = await rig.start(stop_when_idle=True)
    summary = await asyncio.wait_for(handle.result(), 60)
    assert (summary.cards_done, summary.cards_blocked) == (0, 1)
    assert rig.list_of(card) == "Blocked" and rig.script.requests == []
    (comment,) = rig.trello.comments(card)
    assert "no success checks" in comment and "Success checks:" in comment
    assert rig.git("for-each-ref", "refs/heads/monkey/") == ""


async def test_without_an_llm_provider_nothing_is_marked_done(
    rig: Rig, client: Client, pool: asyncpg.Pool
) -> None:
    card = await rig.card("Plain task", ["Autonomous"], ["test -f out.txt"])
    offline = Settings.model_validate(
        rig.settings.model_copy(
            update={"anthropic_api_key": None, "gemini_api_key": None, "task_queue": "x"}
        ).model_dump()
    )
    queue = f"monkey-offline-{uuid.uuid4().hex[:6]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[MonkeyWorkflow],
        activities=monkey_activities(pool, offline),
    ):
        summary = await client.execute_workflow(
            MonkeyWorkflow.run,
            MonkeyInput(board_id=rig.board.board_id, stop_when_idle=True),
            id=f"monkey-offline-{queue}",
            task_queue=queue,
        )
    assert (summary.cards_done, summary.cards_blocked, summary.tokens_used) == (0, 1, 0)
    assert rig.list_of(card) == "Blocked"
    (comment,) = rig.trello.comments(card)
    assert "needs an LLM provider" in comment
    assert rig.git("for-each-ref", "refs/heads/monkey/") == ""


async def test_done_merges_the_branch_and_back_to_sprint_brings_the_feedback(rig: Rig) -> None:
    await asyncio.to_thread(
        trello_client(rig.settings).create_hook, callback_url(rig.settings), rig.board.board_id
    )
    first = await rig.card("Plain task", ["Autonomous"], ["test -f out.txt"])
    second = await rig.card("Second task", ["Autonomous"], ["test -f out.txt"])
    handle = await rig.start()
    await until(
        "both reviewed", lambda: rig.list_of(first) == rig.list_of(second) == "Review Needed"
    )
    branch_of_first = (await rig.status(handle)).counters.branches[0]
    # A person accepts the first card: the signed webhook, the Monkey merges and pushes.
    rig.trello.move_card(first, "Done")
    await until("the webhook delivered", lambda: rig.trello._pending == set())
    await until(
        "the branch merged into main",
        lambda: "out.txt" in rig.git("ls-tree", "--name-only", "main"),
    )
    merge = rig.git("log", "-1", "--format=%an%n%P%n%s", "main").splitlines()
    assert merge[0] == "FactoryLM Monkey" and branch_of_first.commit in merge[1].split()
    await until("merge commented", lambda: any("merged" in c for c in rig.trello.comments(first)))
    # A person sends the second back with a comment: the next attempt gets it as feedback.
    rig.trello.comment_as_person(second, "Please also explain the change in the summary.")
    explained = {"path": "second.txt", "content": "explained\n"}
    rig.script.push(Reply(body={"summary": "explained", "files": [explained]}))
    rig.trello.move_card(second, "Current Sprint")
    await until("worked again", lambda: len(rig.script.requests) == 3)
    await until("back in review", lambda: rig.list_of(second) == "Review Needed")
    redo = rig.script.requests[2]["messages"][0]["content"]
    assert redo.startswith("Card: Second task")
    assert "> Please also explain the change in the summary." in redo
    assert "The earlier change on this card's branch" in redo and "+ok" in redo
    await handle.signal(MonkeyWorkflow.stop)
    summary = await asyncio.wait_for(handle.result(), 30)
    assert summary.merged == 1 and summary.cards_done == 3


async def test_a_check_that_hunts_for_secrets_gets_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"planted-{uuid.uuid4().hex}"
    # In the worker's own environment (the worker runs in this process), as real keys are.
    monkeypatch.setenv("FACTORYLM_TWILIO_AUTH_TOKEN", secret)
    monkeypatch.setenv("FACTORYLM_ANTHROPIC_API_KEY", secret)
    hunt = (
        'python3 -c "import glob, os; print(os.environ); '
        "[print(open(p, 'rb').read()) for p in glob.glob('/proc/*/environ')]; "
        "print(open('/proc/%d/environ' % os.getppid(), 'rb').read()); raise SystemExit(3)\""
    )
    card = await rig.card("Plain task", ["Autonomous"], [hunt])
    caplog.set_level("DEBUG")
    handle = await rig.start(stop_when_idle=True)
    summary = await asyncio.wait_for(handle.result(), 60)
    assert summary.cards_blocked == 1 and rig.list_of(card) == "Blocked"
    comments = rig.trello.comments(card)
    # The hunt ran and its output reached the report: what it found is in the comment.
    assert "exit 3" in comments[-1] and "environ({" in comments[-1]
    runs = await rig.pool.fetch("SELECT summary, check_report, diff FROM monkey_runs")
    history = json.dumps((await handle.fetch_history()).to_json_dict())
    prompts = json.dumps(rig.script.requests)
    everything = [*comments, *[v for r in runs for v in r.values()], history, prompts, caplog.text]
    assert not [text for text in everything if secret in text]
    assert not [text for text in comments if "FACTORYLM_" in text]


async def test_a_change_that_does_not_apply_is_a_failed_attempt_with_the_reason(rig: Rig) -> None:
    bad = "--- a/src/app.py\n+++ b/src/app.py\n@@ -1,2 +1,2 @@\n def nothing():\n-    pass\n+    return 1\n"
    escape = {"summary": "x", "files": [{"path": "../outside.txt", "content": "x"}]}
    rig.script.push(
        Reply(body={"summary": "patch", "diff": bad}),
        Reply(body=escape),  # refused by validation: the router asks for a repair
        Reply(
            body={"summary": "a file over a directory", "files": [{"path": "src", "content": "x"}]}
        ),
    )
    card = await rig.card("Plain task", ["Autonomous"], ["test -f out.txt"])
    handle = await rig.start(stop_when_idle=True)
    summary = await asyncio.wait_for(handle.result(), 60)
    assert summary.cards_blocked == 1 and rig.list_of(card) == "Blocked"
    comments = rig.trello.comments(card)
    assert "the diff does not apply" in comments[0] and "Is a directory" in comments[1]
    repair = rig.script.requests[2]["messages"][0]["content"]
    assert "leaves the repository" in repair
    assert not (rig.remote.parent / "outside.txt").exists()


async def test_a_branch_that_no_longer_merges_is_blocked_and_the_base_is_untouched(
    rig: Rig,
) -> None:
    await asyncio.to_thread(
        trello_client(rig.settings).create_hook, callback_url(rig.settings), rig.board.board_id
    )
    rig.script.push(
        Reply(body={"summary": "one", "files": [{"path": "out.txt", "content": "one\n"}]}),
        Reply(body={"summary": "two", "files": [{"path": "out.txt", "content": "two\n"}]}),
    )
    first = await rig.card("First", ["Autonomous"], ["test -f out.txt"])
    second = await rig.card("Second", ["Autonomous"], ["test -f out.txt"])
    handle = await rig.start()
    await until(
        "both reviewed", lambda: rig.list_of(first) == rig.list_of(second) == "Review Needed"
    )
    rig.trello.move_card(first, "Done")
    await until("first merged", lambda: "out.txt" in rig.git("ls-tree", "--name-only", "main"))
    merged_main = rig.git("rev-parse", "main").strip()
    rig.trello.move_card(second, "Done")
    await until("second blocked", lambda: rig.list_of(second) == "Blocked")
    assert "could not merge" in rig.trello.comments(second)[-1]
    assert "CONFLICT" in rig.trello.comments(second)[-1]
    assert rig.git("rev-parse", "main").strip() == merged_main
    assert rig.git("show", "main:out.txt") == "one\n"
    await handle.signal(MonkeyWorkflow.stop)
    assert (await asyncio.wait_for(handle.result(), 30)).merged == 1
