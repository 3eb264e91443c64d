"""Finding 5: a captured plain "yes" replayed later approved whatever single request was then
pending, and "ok" meant as an acknowledgement approved. Now every inbound message is acted on
once (by Twilio's MessageSid, which the signature covers), a plain yes/no counts only for a
request sent less than its timeout ago, and "ok" is not an approval."""

from __future__ import annotations

from whatsapp_rig import ON_DUTY, Rig, code_in, rig
from workflows.drift_response import DriftResponseWorkflow

__all__ = ["rig"]  # the fixture


async def test_a_replayed_message_is_answered_again_but_acts_only_once(rig: Rig) -> None:
    first = await rig.start(6.0)
    await rig.message_to(ON_DUTY, "Reply YES")
    said = await rig.reply(ON_DUTY, "yes", MessageSid="SMcaptured00000000000000000000001")
    assert said.startswith("Approved")
    await first.result()
    # A new episode waits for the same person; the attacker replays the captured request.
    second = await rig.start(6.0, metric="current")
    await rig.message_to(ON_DUTY, "Reply YES", after=len(rig.twilio.to(ON_DUTY)))
    replayed = await rig.reply(ON_DUTY, "yes", MessageSid="SMcaptured00000000000000000000001")
    assert replayed == said  # the first delivery's answer, nothing new done
    # The second episode's request is answered for real (it must not outlive this test).
    still = await second.query(DriftResponseWorkflow.pending_approval)
    assert still is not None
    open_code = still.code
    assert (await rig.reply(ON_DUTY, f"NO {open_code}")).startswith("Denied")
    assert (await second.result()).status == "denied"
    stored = await rig.pool.fetchval(
        "SELECT count(*) FROM inbound_messages WHERE message_sid = $1",
        "SMcaptured00000000000000000000001",
    )
    assert stored == 1


async def test_a_plain_yes_for_a_request_older_than_its_timeout_approves_nothing(
    rig: Rig,
) -> None:
    handle = await rig.start(6.0)
    request = await rig.message_to(ON_DUTY, "Reply YES")
    # The request was sent longer ago than its timeout (its workflow still waits: it is an
    # old request the workflow has not closed yet, as after a delay in the timer firing).
    await rig.pool.execute(
        "UPDATE approval_requests SET expires_at = now() - interval '1 second' "
        "WHERE workflow_id = $1",
        handle.id,
    )
    said = await rig.reply(ON_DUTY, "yes")
    assert said.startswith("No request is waiting") and "YES <code>" in said
    assert await handle.query(DriftResponseWorkflow.pending_approval) is not None
    # With its code the person can still answer it while the workflow waits.
    approved = await rig.reply(ON_DUTY, f"YES {code_in(request)}")
    assert approved.startswith("Approved")
    assert (await handle.result()).status == "completed"


async def test_ok_is_an_acknowledgement_not_an_approval(rig: Rig) -> None:
    handle = await rig.start(6.0)
    await rig.message_to(ON_DUTY, "Reply YES")
    for text in ("ok", "OK", "Ok."):
        said = await rig.reply(ON_DUTY, text)
        assert not said.startswith("Approved"), said
    pending = await handle.query(DriftResponseWorkflow.pending_approval)
    assert pending is not None
    assert await handle.query(DriftResponseWorkflow.status) != "completed"
