"""What a person's reply means: ACK is an acknowledgement, never an approval, and the reverse."""

from __future__ import annotations

import pytest

from factorylm.whatsapp import STATE_OF, STATUS_RANK, parse_ack, parse_reply


@pytest.mark.parametrize(
    ("text", "code"),
    [("ACK", None), ("ack 4821", "4821"), ("Ack: 4821", "4821"), (" acknowledged ", None),
     ("ACK #0042.", "0042")],
)  # fmt: skip
def test_ack_with_or_without_a_code(text: str, code: str | None) -> None:
    assert parse_ack(text) == (True, code)
    assert parse_reply(text) is None  # an ACK never approves anything


@pytest.mark.parametrize("text", ["YES 4821", "ok", "ack, on my way", "ack4821", "backup", ""])
def test_other_words_are_not_an_ack(text: str) -> None:
    assert parse_ack(text) == (False, None)


def test_twilio_statuses_map_onto_the_outbox_states_in_order() -> None:
    states = [STATE_OF[STATUS_RANK[s]] for s in ("queued", "sent", "delivered")]
    assert states == ["queued", "sent", "delivered"]
    assert {STATE_OF[STATUS_RANK[s]] for s in ("failed", "undelivered")} == {"failed"}
    assert STATE_OF[STATUS_RANK["read"]] == "delivered"
