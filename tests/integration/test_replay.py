"""Recorded histories of every workflow type replay under the current code (temporalio's
Replayer), so a change that would break running workflows fails here, in CI, and not in the
plant. Re-record after an intended compatible change: FACTORYLM_RECORD_HISTORIES=1 make test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workers.agents import WORKFLOWS

HISTORIES = Path(__file__).parent.parent / "histories"
RECORDED = sorted(HISTORIES.glob("*.json"))


def _load(path: Path) -> tuple[WorkflowHistory, str]:
    recorded = json.loads(path.read_text())
    history = WorkflowHistory.from_json(recorded["workflow_id"], recorded["history"])
    started = recorded["history"]["events"][0]["workflowExecutionStartedEventAttributes"]
    return history, str(started["workflowType"]["name"])


def test_every_workflow_type_has_a_recorded_history() -> None:
    recorded = {_load(p)[1] for p in RECORDED}
    registered = {w.__name__ for w in WORKFLOWS}
    assert registered <= recorded, f"record a history for: {sorted(registered - recorded)}"


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
async def test_history_replays_under_the_current_code(path: Path) -> None:
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    history, _ = _load(path)
    await replayer.replay_workflow(history)
