"""The board adapter and `factorylm trello init|import` through py-trello against the local
Trello (dev/fakes/trello.py), which speaks the REST paths py-trello calls."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dev.fakes.server import LocalServer
from dev.fakes.trello import FakeTrello
from factorylm.models.monkey import LABELS, LISTS
from factorylm.settings import PROJECT_ROOT, Settings
from factorylm.trello.board import TrelloBoard, TrelloError
from factorylm.trello.plan import load_plan

PLAN = """# Sprint plan

## Build the tracker
Labels: Autonomous, Critical Path, Agent Development
Estimated tokens: 4,500

Track every task's tokens.

### Checklist
- [ ] store usage
- [ ] budget check

### Success checks
- `test -f MONKEY_RESULT.md`

## Install the database
Labels: Human Action Required, Infrastructure

Somebody installs it.
"""


@pytest.fixture
async def trello(settings: Settings) -> AsyncIterator[tuple[FakeTrello, LocalServer, Settings]]:
    fake = FakeTrello()
    server = LocalServer(fake.app())
    await server.start()
    s = Settings.model_validate(
        settings.model_copy(
            update={
                "trello_api_key": fake.api_key,
                "trello_token": fake.token,
                "trello_base_url": server.url,
                "trello_board_id": "",
            }
        ).model_dump()
    )
    yield fake, server, s
    await server.stop()


async def test_init_and_import_through_py_trello(
    trello: tuple[FakeTrello, LocalServer, Settings], tmp_path: Path
) -> None:
    fake, _, s = trello
    board = await asyncio.to_thread(TrelloBoard.create, s, "Plant build")
    setup = await asyncio.to_thread(board.ensure_structure)
    assert setup.lists_added == list(LISTS) and setup.labels_added == list(LABELS)
    again = await asyncio.to_thread(board.ensure_structure)
    assert again.lists_added == [] and again.labels_added == []
    plan = tmp_path / "plan.md"
    plan.write_text(PLAN)
    added, skipped = await asyncio.to_thread(board.import_plan, load_plan(plan))
    assert added == ["Build the tracker", "Install the database"] and skipped == []
    assert (await asyncio.to_thread(board.import_plan, load_plan(plan)))[0] == []
    backlog = await asyncio.to_thread(board.cards, "Backlog")
    tracker = backlog[0]
    assert tracker.labels == ["Autonomous", "Critical Path", "Agent Development"]
    assert tracker.checklist == ["store usage", "budget check"]
    assert tracker.estimated_tokens == 4500
    assert tracker.success_checks == ["test -f MONKEY_RESULT.md"]
    await asyncio.to_thread(board.move, tracker.id, "Current Sprint")
    await asyncio.to_thread(board.comment, tracker.id, "picked up")
    assert fake.list_of(tracker.id) == "Current Sprint"
    assert fake.comments(tracker.id) == ["picked up"]
    # py-trello's own paths, as the fake saw them.
    assert ("PUT", f"cards/{tracker.id}/idList") in fake.requests
    assert ("POST", f"cards/{tracker.id}/actions/comments") in fake.requests


async def test_wrong_token_is_an_actionable_error(
    trello: tuple[FakeTrello, LocalServer, Settings],
) -> None:
    fake, _, s = trello
    board_id = fake.add_board("b")
    wrong = Settings.model_validate(s.model_copy(update={"trello_token": "nope"}).model_dump())
    with pytest.raises(TrelloError, match="FACTORYLM_TRELLO_TOKEN"):
        await asyncio.to_thread(TrelloBoard.from_settings(wrong, board_id).ensure_structure)


async def test_cli_init_and_import(
    trello: tuple[FakeTrello, LocalServer, Settings], tmp_path: Path
) -> None:
    fake, server, _ = trello
    board_id = fake.add_board("existing")
    plan = tmp_path / "plan.md"
    plan.write_text(PLAN)
    env = {
        **os.environ,
        "FACTORYLM_TRELLO_API_KEY": fake.api_key,
        "FACTORYLM_TRELLO_TOKEN": fake.token,
        "FACTORYLM_TRELLO_BASE_URL": server.url,
        "FACTORYLM_TRELLO_BOARD_ID": board_id,
    }

    async def cli(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", *args,
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    code, out = await cli("trello", "init")
    assert code == 0, out
    assert "lists added ['Backlog'" in out
    code, out = await cli("trello", "import", str(plan))
    assert code == 0 and "2 card(s) added to Backlog" in out, out
    assert [c["name"] for c in fake.cards_in(board_id, "Backlog")] == [
        "Build the tracker",
        "Install the database",
    ]
    code, out = await cli("trello", "import", str(PROJECT_ROOT / "missing.md"))
    assert code != 0
