"""SHELVE / UNSHELVE replies as people type them (factorylm/alarms.py::parse_shelve)."""

from __future__ import annotations

import pytest

from factorylm.alarms import human_duration, parse_shelve


@pytest.mark.parametrize(
    ("text", "code", "seconds"),
    [
        ("SHELVE A7 2h", "A7", 7200.0),
        ("shelve a7 2h", "A7", 7200.0),
        ("  Shelve A12 30m. ", "A12", 1800.0),
        ("SHELVE A7 1h30m", "A7", 5400.0),
        ("SHELVE A7 1 h 30 min", "A7", 5400.0),
        ("SHELVE A7 90 minutes", "A7", 5400.0),
        ("SHELVE A7 2 hours", "A7", 7200.0),
    ],
)
def test_a_shelve_reply_names_the_code_and_the_time(text: str, code: str, seconds: float) -> None:
    command = parse_shelve(text)
    assert command is not None and command.error is None
    assert (command.code, command.seconds) == (code, seconds)


def test_unshelve_names_only_the_code() -> None:
    command = parse_shelve("unshelve a7")
    assert command is not None and (command.code, command.seconds, command.error) == (
        "A7",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("SHELVE A7", "For how long? Reply e.g. SHELVE A7 2h. Nothing was shelved."),
        ("SHELVE A7 0m", "A shelf lasts at least a minute."),
        ("SHELVE A7 2d", "Not understood."),
        ("SHELVE 4821 2h", "Not understood."),
        ("SHELVE", "Not understood."),
        ("UNSHELVE A7 now", "Not understood."),
    ],
)
def test_a_malformed_shelve_reply_is_answered_with_what_is_wrong(text: str, says: str) -> None:
    command = parse_shelve(text)
    assert command is not None and command.error is not None
    assert command.error.startswith(says)


@pytest.mark.parametrize(
    "text",
    ["YES 4821", "replaced the bearing", "shelved the spare pump", "SHELVE A7 2h " + "x" * 200],
)
def test_other_messages_are_not_shelve_replies(text: str) -> None:
    assert parse_shelve(text) is None


def test_durations_read_as_people_say_them() -> None:
    assert [human_duration(s) for s in (60, 1800, 7200, 5400, 28800)] == [
        "1 min",
        "30 min",
        "2 h",
        "1 h 30 min",
        "8 h",
    ]
