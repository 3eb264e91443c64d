"""The on-call roster file: who is on call when, escalation chains, and the errors a person
editing it gets (each naming the entry)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from factorylm.roster import RosterError, load_roster, parse_roster, read_roster
from factorylm.settings import Settings

PROJECT = Path(__file__).resolve().parents[2]


def _settings(**over: Any) -> Settings:
    return Settings(_env_file=None, plant_timezone="Europe/Berlin", **over)


def _roster(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "people": [
            {"id": "ana", "whatsapp": "+15550300001", "sms": "+15550300011"},
            {"id": "ben", "whatsapp": "+15550300002"},
            {"id": "cho", "sms": "+15550300003"},
        ],
        "shifts": [
            {
                "name": "day",
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "start": "06:00",
                "end": "18:00",
                "on_duty": "ana",
                "backup": "ben",
            },
            {
                "name": "night",
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "start": "18:00",
                "end": "06:00",
                "on_duty": "ben",
                "backup": "cho",
            },
        ],
        "outside_shifts": {"on_duty": "cho", "backup": "ana"},
    }
    data.update(over)
    return data


def test_the_shift_is_chosen_in_the_plant_time_zone() -> None:
    roster = parse_roster(_roster(), _settings())
    # 05:30 UTC on a Tuesday is 06:30 in Berlin (winter): the day shift, not the night one.
    on_duty, backup = roster.on_call(datetime(2026, 12, 1, 5, 30, tzinfo=UTC))
    assert (on_duty.id, backup and backup.id) == ("ana", "ben")
    on_duty, backup = roster.on_call(datetime(2026, 12, 1, 4, 30, tzinfo=UTC))  # 05:30 local
    assert (on_duty.id, backup and backup.id) == ("ben", "cho")


def test_a_night_shift_runs_past_midnight_and_the_weekend_falls_to_outside_shifts() -> None:
    roster = parse_roster(_roster(), _settings())
    # Saturday 02:00 Berlin: Friday's night shift (18:00 → 06:00) still runs.
    assert roster.on_call(datetime(2026, 12, 5, 1, 0, tzinfo=UTC))[0].id == "ben"
    # Saturday 12:00 Berlin: no shift; outside_shifts.
    assert roster.on_call(datetime(2026, 12, 5, 11, 0, tzinfo=UTC))[0].id == "cho"


def test_chains_are_chosen_by_action_then_severity_then_default() -> None:
    data = _roster(
        escalation={
            "default": {"steps": [{"notify": "on_duty", "wait_s": 120}]},
            "severities": {
                "critical": {
                    "steps": [{"notify": "on_duty", "wait_s": 60}, {"notify": "cho", "wait_s": 30}],
                    "repeat": 2,
                }
            },
            "actions": {"shutdown_motor": {"steps": [{"notify": "backup", "wait_s": 45}]}},
        }
    )
    roster = parse_roster(data, _settings())
    tuesday_day = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    chain = roster.chain(tuesday_day, action="shutdown_motor", severity="critical")
    assert [(s.person, s.wait_s) for s in chain.steps] == [("ben", 45)]
    chain = roster.chain(tuesday_day, action="other", severity="critical")
    assert [(s.person, s.address, s.wait_s) for s in chain.steps] == [
        ("ana", "whatsapp:+15550300001", 60),
        ("cho", "+15550300003", 30),
    ]
    assert chain.repeat == 2
    assert chain.steps[0].fallback == "+15550300011"  # ana's SMS, tried if WhatsApp fails
    assert chain.steps[1].fallback is None  # cho has only SMS: nothing to fall back to
    assert [s.person for s in roster.chain(tuesday_day, severity="warning").steps] == ["ana"]


def test_a_notify_action_pages_the_backup_first() -> None:
    roster = parse_roster(_roster(), _settings(approval_timeout_s=90))
    chain = roster.page_chain(datetime(2026, 12, 1, 9, 0, tzinfo=UTC), "send_alert_to_backup_tech")
    assert [(s.person, s.wait_s) for s in chain.steps] == [("ben", 90), ("ana", 90)]


def test_the_approvers_setting_is_a_roster_of_its_own() -> None:
    roster = load_roster(_settings(approvers=["whatsapp:+15550100001", "whatsapp:+15550100002"]))
    assert roster is not None
    chain = roster.chain(datetime(2026, 12, 6, 3, 0, tzinfo=UTC))
    assert [s.address for s in chain.steps] == ["whatsapp:+15550100001", "whatsapp:+15550100002"]
    assert load_roster(_settings(approvers=[])) is None


def test_the_shipped_example_roster_loads() -> None:
    roster = read_roster(PROJECT / "config" / "roster.example.yaml", _settings())
    assert len(roster.people) >= 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"shifts": [{"name": "day", "start": "06:00", "end": "18:00", "on_duty": "zed"}]},
            "shift 'day': unknown person 'zed'",
        ),
        (
            {"outside_shifts": {"on_duty": "ana", "backup": "nobody"}},
            "outside_shifts: unknown person 'nobody'",
        ),
        (
            {"escalation": {"actions": {"shutdown_motor": {"steps": [{"notify": "dan"}]}}}},
            "escalation action 'shutdown_motor': unknown person 'dan'",
        ),
        (
            {"people": [{"id": "ana", "whatsapp": "0171 555 0001"}]},
            "person 'ana': whatsapp '0171 555 0001' is not an E.164 number",
        ),
        (
            {"people": [{"id": "ana", "sms": "+0155503"}]},
            "person 'ana': sms '+0155503' is not an E.164 number",
        ),
        ({"people": [{"id": "ana"}]}, "person 'ana' has no channel"),
    ],
)
def test_a_bad_entry_is_an_error_naming_it(change: dict[str, Any], message: str) -> None:
    with pytest.raises(RosterError, match="roster") as err:
        parse_roster(_roster(**change), _settings())
    assert message in str(err.value)


def test_overlapping_shifts_are_refused_with_both_names() -> None:
    shifts = [
        {"name": "early", "days": ["mon"], "start": "06:00", "end": "14:00", "on_duty": "ana"},
        {"name": "late", "days": ["mon"], "start": "13:00", "end": "22:00", "on_duty": "ben"},
    ]
    with pytest.raises(RosterError) as err:
        parse_roster(_roster(shifts=shifts), _settings())
    assert "shift 'late' overlaps shift 'early' at mon 13:00" in str(err.value)


def test_a_sunday_night_shift_that_runs_into_monday_overlaps_a_monday_morning_one() -> None:
    shifts = [
        {"name": "sun-night", "days": ["sun"], "start": "22:00", "end": "06:00", "on_duty": "ana"},
        {"name": "mon-early", "days": ["mon"], "start": "05:00", "end": "09:00", "on_duty": "ben"},
    ]
    with pytest.raises(
        RosterError, match="shift 'mon-early' overlaps shift 'sun-night' at mon 05:00"
    ):
        parse_roster(_roster(shifts=shifts), _settings())


def test_a_week_with_a_gap_and_no_outside_shifts_is_refused_at_load() -> None:
    data = _roster()
    del data["outside_shifts"]
    with pytest.raises(RosterError, match="nobody is on call at mon 00:00"):
        parse_roster(data, _settings())


def test_an_unknown_time_zone_and_a_missing_file_are_errors(tmp_path: Path) -> None:
    with pytest.raises(RosterError, match="timezone 'Mars/Olympus' is not a known time zone"):
        parse_roster(_roster(timezone="Mars/Olympus"), _settings())
    with pytest.raises(RosterError, match="cannot be read"):
        read_roster(tmp_path / "absent.yaml", _settings())
    bad = tmp_path / "roster.yaml"
    bad.write_text(yaml.safe_dump({"people": "ana"}))
    with pytest.raises(RosterError, match=f"roster {bad}: people"):
        read_roster(bad, _settings())
