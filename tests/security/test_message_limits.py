"""Finding 10: approval texts carried unbounded LLM text past WhatsApp's 1600-character limit;
Twilio refused the send, the activity retried forever and the approval timer never started.
Now the text fits, the summary gives way first, and the link and the reply line always stay."""

from __future__ import annotations

import asyncio

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client as TwilioClient

from activities.notify import approval_text
from dev.fakes.server import LocalServer
from dev.fakes.twilio import FakeTwilio
from factorylm.models.approvals import RequestApprovalInput
from factorylm.models.drift import ActionProposal
from factorylm.plant import ActionKind, Policy
from factorylm.whatsapp import WHATSAPP_MAX_CHARS, fit_whatsapp
from helpers import make_alert

LINK = "http://127.0.0.1:8233/namespaces/factorylm/workflows/drift-conveyor-1-vibration"


def _request(summary: str, reason: str = "vibration at +5.8σ") -> RequestApprovalInput:
    return RequestApprovalInput(
        workflow_id="drift-conveyor-1-vibration",
        code="4821",
        alert=make_alert(5.8),
        proposal=ActionProposal(
            action="shutdown_motor",
            description="Stop conveyor-1's motor",
            kind=ActionKind.PLC_WRITE,
            policy=Policy.APPROVAL,
            reason=reason,
            value=0.0,
        ),
        recipients=["whatsapp:+15550100001"],
        summary=summary,
    )


@pytest.mark.parametrize("size", [5_000, 100_000])
def test_an_approval_text_with_a_huge_summary_fits_and_keeps_link_and_reply(size: int) -> None:
    text = approval_text(_request("word " * (size // 5)), LINK)
    assert len(text) <= WHATSAPP_MAX_CHARS
    assert LINK in text and text.endswith(
        "Reply YES 4821 to approve or NO 4821 to deny (within 5 min)."
    )
    assert "shutdown_motor" in text and "(more in Details)" in text


def test_a_huge_reason_is_clipped_too() -> None:
    text = approval_text(_request("", reason="because " * 2000), LINK)
    assert len(text) <= WHATSAPP_MAX_CHARS and "Reply YES 4821" in text


def test_any_message_is_cut_to_the_limit_with_where_to_read_the_rest() -> None:
    cut = fit_whatsapp("x" * 5000, LINK)
    assert len(cut) == WHATSAPP_MAX_CHARS and cut.endswith(f"(cut; full text: {LINK})")
    assert fit_whatsapp("short", LINK) == "short"


async def test_the_local_twilio_refuses_an_over_long_body_as_twilio_does() -> None:
    """The stand-in must refuse what Twilio refuses, or the tests above would prove nothing
    about the demo and the end-to-end tests."""
    twilio = FakeTwilio()
    server = LocalServer(twilio.app())
    await server.start()
    try:
        client = TwilioClient(twilio.account_sid, twilio.auth_token)
        client.api.base_url = server.url
        with pytest.raises(TwilioRestException) as refused:
            await asyncio.to_thread(
                client.messages.create,
                from_="whatsapp:+14155238886",
                to="whatsapp:+15550100001",
                body="y" * 1601,
            )
        assert refused.value.code == 21617
        ok = await asyncio.to_thread(
            client.messages.create,
            from_="whatsapp:+14155238886",
            to="whatsapp:+15550100001",
            body="y" * 1600,
        )
        assert ok.sid
    finally:
        await server.stop()


def test_a_summary_that_fits_is_sent_whole() -> None:
    summary = "Bearing wear likely; replacing the drive-end bearing fixed it last time. " * 8
    text = approval_text(_request(summary.strip()), LINK)
    assert summary.strip() in text and "(more in Details)" not in text
