"""The card format, plan import parsing, webhook signatures and card choice. (Success checks
run in the sandbox: tests/integration/test_sandbox.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from factorylm.models.monkey import SprintCard
from factorylm.trello.cards import estimated_tokens, render_description, success_checks
from factorylm.trello.plan import PlanError, load_plan
from factorylm.trello.webhook import sign, verify
from workflows.monkey import next_card


def test_description_round_trip() -> None:
    text = render_description("Goal: a thing.", 4500, ["test -f A.md", "grep -q 'x y' A.md"])
    assert estimated_tokens(text) == 4500
    assert success_checks(text) == ["test -f A.md", "grep -q 'x y' A.md"]
    assert estimated_tokens("Estimated tokens: ~3,000") == 3000
    assert estimated_tokens("no estimate") == 0


def test_markdown_and_yaml_plans(tmp_path: Path) -> None:
    md = tmp_path / "plan.md"
    md.write_text(
        "# Plan\n\n## Build the widget\nLabels: Autonomous, Critical Path\n"
        "Estimated tokens: 3,500\n\nMake the widget.\n\n### Checklist\n- [ ] write it\n"
        "- [ ] test it\n\n### Success checks\n- `test -f widget.py`\n\n"
        "## Wire the PLC\nLabels: Human Action Required\n\nA person wires it.\n"
    )
    cards = load_plan(md)
    assert [c.name for c in cards] == ["Build the widget", "Wire the PLC"]
    first = cards[0]
    assert first.labels == ["Autonomous", "Critical Path"] and first.estimated_tokens == 3500
    assert first.checklist == ["write it", "test it"]
    assert first.success_checks == ["test -f widget.py"]
    assert first.description == "Make the widget."
    yml = tmp_path / "plan.yaml"
    yml.write_text(
        "cards:\n  - name: A\n    labels: [Autonomous]\n    estimated_tokens: 10\n"
        "    success_checks: [[grep, -q, 'two words', f.txt]]\n"
    )
    (card,) = load_plan(yml)
    assert card.success_checks == ["grep -q 'two words' f.txt"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("cards:\n  - name: A\n    labels: [Urgent]\n")
    with pytest.raises(PlanError, match="unknown label"):
        load_plan(bad)


def test_webhook_signature() -> None:
    body, url = b'{"action": {}}', "https://plant.example/webhooks/trello"
    good = sign("secret", body, url)
    assert verify("secret", body, url, good)
    assert not verify("secret", body + b" ", url, good)
    assert not verify("secret", body, url + "x", good)
    assert not verify("other", body, url, good)
    assert not verify("secret", body, url, "")


def test_critical_path_first_then_position() -> None:
    cards = [
        SprintCard(id="1", name="late", labels=["Autonomous"], pos=1),
        SprintCard(id="2", name="human", labels=["Autonomous", "Human Action Required"], pos=0),
        SprintCard(id="3", name="critical", labels=["Autonomous", "Critical Path"], pos=9),
        SprintCard(id="4", name="unlabelled", pos=0),
    ]
    chosen = next_card(cards)
    assert chosen is not None and chosen.name == "critical"
    assert next_card(cards[3:]) is None
