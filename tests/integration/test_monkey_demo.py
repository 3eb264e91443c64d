"""`factorylm demo --once --scenario monkey` on a stack with free ports: the same code as the
CLI. Its branches are real: cloned by hand, each one's check passes, and main's fails."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client

from app.cli import build_parser
from dev.demo.environment import Demo, demo_settings
from dev.demo.monkey import CARDS, run_monkey_scenario
from factorylm.settings import Settings
from helpers import free_port, plant_with_free_ports


def test_monkey_is_a_demo_scenario() -> None:
    assert (
        build_parser().parse_args(["demo", "--once", "--scenario", "monkey"]).scenario == "monkey"
    )


def _unittest(checkout: Path, module: str) -> int:
    # By hand, outside the sandbox, as a reviewer would.
    return subprocess.run(
        ["python3", "-m", "unittest", "-q", module], cwd=checkout, capture_output=True
    ).returncode


async def test_the_demo_leaves_branches_whose_checks_pass_by_hand(
    tmp_path: Path, settings: Settings, client: Client
) -> None:
    _, plant_file = plant_with_free_ports(tmp_path)
    queue = f"monkey-demo-{uuid.uuid4().hex[:8]}"
    s = demo_settings(
        settings.model_copy(
            update={
                "plant_file": plant_file,
                "task_queue": queue,
                "plc_task_queue": f"{queue}-edge",
                "api_port": free_port(),
            }
        )
    )
    demo = Demo(s)
    said: list[str] = []
    try:
        await demo.up()
        summary = await run_monkey_scenario(demo, said.append)
    finally:
        await demo.down()
    assert summary["status"] == "completed"
    assert (summary["cards_done"], summary["cards_blocked"]) == (2, 1)
    assert summary["tokens_used"] > 0
    assert any("plays it with scripted changes" in line for line in said)
    branches = {b["name"]: b for b in summary["branches"]}
    assert len(branches) == 2 and all(b["checks_passed"] for b in branches.values())
    await asyncio.to_thread(_check_by_hand, summary, tmp_path / "checkout")


def _check_by_hand(summary: dict[str, Any], checkout: Path) -> None:
    branches = {b["name"]: b for b in summary["branches"]}
    subprocess.run(["git", "clone", "-q", summary["repo"], str(checkout)], check=True)
    assert _unittest(checkout, "tests.test_calc") != 0  # main still has the bug
    for card, module in ((CARDS[0], "tests.test_calc"), (CARDS[1], "tests.test_greet")):
        (name,) = [n for n in branches if n.endswith("-" + card.name.lower().replace(" ", "-"))]
        subprocess.run(["git", "-C", str(checkout), "checkout", "-q", name], check=True)
        head = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        assert head == branches[name]["commit"]
        assert _unittest(checkout, module) == 0, name
