"""The agents' pure parts: outcome classification, the catalog gate, the Conductor, manual
reading and chunking, and what triage puts first."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from activities.agents.alarm_triage import what_worked
from activities.agents.outcomes import classify_outcome
from activities.planning import choose_action, gate_proposals
from factorylm.manuals import ManualError, Section, chunk_sections, read_manual
from factorylm.models.agents import OutcomeKind, SimilarEvent
from factorylm.models.drift import ProposedAction
from factorylm.plant import load_plant
from factorylm.settings import PROJECT_ROOT
from helpers import make_alert
from workflows.conductor import Agent, EventType, agents_for, manual_query

PLANT = load_plant(PROJECT_ROOT / "config" / "plant.yaml")


@pytest.mark.parametrize(
    ("text", "kind", "action"),
    [
        ("fixed bearing", OutcomeKind.RESOLVED, "replaced_bearing"),
        (
            "Replaced the drive-end bearing, runs smooth now",
            OutcomeKind.RESOLVED,
            "replaced_bearing",
        ),
        ("false alarm", OutcomeKind.FALSE_POSITIVE, None),
        ("False positive - sensor cable was loose", OutcomeKind.FALSE_POSITIVE, None),
        ("tightened the motor foot bolts", OutcomeKind.RESOLVED, "tightened_mounting"),
        ("greased the bearings", OutcomeKind.RESOLVED, "lubricated_bearing"),
        ("realigned the coupling", OutcomeKind.RESOLVED, "realigned_coupling"),
        (
            "still vibrating after greasing the bearing",
            OutcomeKind.UNRESOLVED,
            "lubricated_bearing",
        ),
        ("looked at it", OutcomeKind.UNRESOLVED, None),
    ],
)
def test_outcome_classification(text: str, kind: OutcomeKind, action: str | None) -> None:
    draft = classify_outcome(text)
    assert (draft.kind, draft.action_taken) == (kind, action)


def test_the_gate_takes_the_first_allowed_proposal() -> None:
    alert = make_alert(6.0)
    plan = gate_proposals(
        PLANT,
        alert,
        [
            ProposedAction(action="open_the_valve", reason="not in the catalog"),
            ProposedAction(action="modify_plc_program", reason="catalog, but not for vibration"),
            ProposedAction(action="send_alert_to_backup_tech", reason="catalog, current only"),
            ProposedAction(action="reduce_motor_speed_to_60pct", reason="slow down first"),
            ProposedAction(action="shutdown_motor", reason="stop it"),
        ],
    )
    assert plan is not None and plan.action == "reduce_motor_speed_to_60pct"
    assert plan.reason.startswith("slow down first") and plan.value == 1050


def test_the_gate_refuses_an_action_below_its_threshold_and_falls_back() -> None:
    alert = make_alert(2.5)
    plan = gate_proposals(PLANT, alert, [ProposedAction(action="shutdown_motor", reason="be safe")])
    assert plan == choose_action(PLANT, alert)
    assert plan is not None and plan.action == "reduce_motor_speed_to_60pct"


def test_the_gate_refuses_another_plcs_action() -> None:
    alert = make_alert(6.0, plc="press-1")
    plan = gate_proposals(PLANT, alert, [ProposedAction(action="shutdown_motor", reason="x")])
    assert plan is None  # shutdown_motor stops conveyor-1, never press-1


def test_no_proposals_means_the_rules_choose() -> None:
    alert = make_alert(6.0)
    assert gate_proposals(PLANT, alert, []) == choose_action(PLANT, alert)


def test_the_conductor_routes_events_to_agents() -> None:
    assert agents_for(EventType.DRIFT) == (
        Agent.MANUAL_HUNTER,
        Agent.ALARM_TRIAGE,
        Agent.WATCHMAN,
    )
    assert Agent.ALARM_TRIAGE in agents_for(EventType.ALARM_CODE)
    assert agents_for(EventType.PHOTO_FINDING) == (Agent.MANUAL_HUNTER,)
    alert = make_alert(3.0).model_copy(update={"related": {"motor_temp": 1.2}})
    query = manual_query(alert)
    assert "vibration rising on conveyor-1" in query and "motor temp" in query


def _similar(sim: float, kind: OutcomeKind | None, outcome: str | None) -> SimilarEvent:
    return SimilarEvent(
        event_id=1,
        plc_id="press-1",
        vendor="siemens_s7",
        metric="vibration",
        magnitude_sigma=2.3,
        detected_at=datetime(2026, 1, 15, tzinfo=UTC),
        text="...",
        similarity=sim,
        outcome=outcome,
        outcome_kind=kind,
        action_taken="replaced_bearing" if kind is OutcomeKind.RESOLVED else None,
        resolved=kind is OutcomeKind.RESOLVED,
    )


def test_triage_leads_with_the_most_similar_known_outcome() -> None:
    lead = what_worked(
        [
            _similar(0.9, None, None),
            _similar(0.87, OutcomeKind.RESOLVED, "bearing replaced"),
            _similar(0.8, OutcomeKind.FALSE_POSITIVE, "false alarm"),
        ]
    )
    assert lead is not None and lead.startswith("Last time this worked: replaced bearing")
    assert "87 % similar to 2026-01-15 on press-1" in lead
    false = what_worked([_similar(0.8, OutcomeKind.FALSE_POSITIVE, "false alarm")])
    assert false is not None and "false alarm" in false and "sensor" in false
    assert what_worked([_similar(0.3, OutcomeKind.RESOLVED, "x")]) is None


def test_chunks_overlap_and_keep_their_page() -> None:
    words = " ".join(f"w{i}" for i in range(250))
    chunks = chunk_sections(
        [Section(3, None, words), Section(4, None, "short page")], words=100, overlap=20
    )
    assert [c.page for c in chunks] == [3, 3, 3, 4]
    assert chunks[0].text.split()[-20:] == chunks[1].text.split()[:20]
    assert chunks[2].text.split()[-1] == "w249" and chunks[3].index == 3


def test_markdown_sections_become_citations() -> None:
    media, title, sections = read_manual(PROJECT_ROOT / "manuals" / "conveyor-drive.md")
    assert media == "markdown" and title.startswith("Conveyor-1 Drive Unit")
    assert "Drive-end bearing replacement" in [s.heading for s in sections]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.md", b"", "the file is empty"),
        ("blank.txt", b"  \n\n ", "no text"),
        ("broken.pdf", b"%PDF-1.4\nthis is not really a PDF", "cannot read the PDF"),
        ("latin1.txt", "Lager gewechselt, Temperatur 55 °C".encode("latin-1"), "not UTF-8"),
        ("manual.docx", b"PK...", "unsupported file type"),
    ],
)
def test_bad_manuals_are_named(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ManualError, match=message) as err:
        read_manual(path)
    assert name in str(err.value)
