"""WhatsApp approvals end to end: the official twilio client against a local Twilio API,
signed inbound webhooks into the real API, decisions reaching the real workflow."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx

from app.stack import Stack
from dev.fakes.twilio import sign
from helpers import make_alert
from whatsapp_rig import BACKUP, ON_DUTY, Rig, code_in, rig
from workflows.drift_response import DriftResponseWorkflow
from workflows.outcome_followup import OutcomeFollowUpWorkflow

__all__ = ["rig"]  # the fixture


async def test_yes_with_code_approves_and_the_person_is_told(rig: Rig, record_history: Any) -> None:
    handle = await rig.start(6.0)
    request = await rig.message_to(ON_DUTY, "Reply YES")
    assert "shutdown_motor" in request.body and "vibration on conveyor-1" in request.body
    assert f"/workflows/{handle.id}" in request.body  # the dashboard link
    assert rig.twilio.to(BACKUP) == []  # the backup is only asked on escalation
    said = await rig.reply(ON_DUTY, f"YES {code_in(request)}")
    assert said.startswith("Approved: shutdown_motor")
    result = await handle.result()
    await record_history(handle, "drift_response_approved_on_whatsapp")
    assert result.status == "completed" and result.approved_by == ON_DUTY
    assert await rig.sim.read("motor_run") == 0
    summary = await rig.message_to(ON_DUTY, f"Work order {result.work_order_id}")
    assert "completed" in summary.body


async def test_a_new_episode_reaches_the_approver_whatever_codes_earlier_ones_used(
    rig: Rig,
) -> None:
    """A machine's drift workflow id repeats for every episode, and 4-digit codes repeat
    across episodes: earlier requests under the same id, with every possible code, must not
    stop this run's request from being sent."""
    a = make_alert(6.0)
    workflow_id = f"{a.workflow_id}-{uuid.uuid4().hex[:6]}"
    await rig.pool.copy_records_to_table(
        "approval_requests",
        records=[
            (workflow_id, f"{c:04d}", ON_DUTY, "shutdown_motor", "expired", f"SMold{c}", "old")
            for c in range(10_000)
        ],
        columns=("workflow_id", "code", "recipient", "action", "status", "message_sid", "run_id"),
    )
    try:
        handle = await rig.stack.client.start_workflow(
            DriftResponseWorkflow.run, a, id=workflow_id, task_queue=rig.settings.task_queue
        )
        request = await rig.message_to(ON_DUTY, "Reply YES")
        code = code_in(request)
        assert (await rig.reply(ON_DUTY, f"YES {code}")).startswith("Approved: shutdown_motor")
        result = await handle.result()
    finally:
        old = await rig.pool.execute(
            "DELETE FROM approval_requests WHERE workflow_id = $1 AND run_id = 'old'", workflow_id
        )
    assert result.status == "completed" and result.approved_by == ON_DUTY
    this_run = await rig.pool.fetch(
        "SELECT status, message_sid FROM approval_requests WHERE workflow_id = $1 AND run_id = $2",
        workflow_id,
        handle.result_run_id,
    )
    assert [(r["status"], r["message_sid"] == request.sid) for r in this_run] == [
        ("approved", True)
    ]
    assert old == "DELETE 10000"  # the earlier episodes' requests were left as they were


async def test_plain_yes_needs_exactly_one_pending_request(rig: Rig) -> None:
    first = await rig.start(6.0, "vibration")
    second = await rig.start(6.0, "motor_temp")
    await rig.message_to(ON_DUTY, "motor_temp on conveyor-1")
    await rig.message_to(ON_DUTY, "vibration on conveyor-1")
    said = await rig.reply(ON_DUTY, "yes")
    assert said.startswith("Several requests are waiting")
    deny_code = code_in(await rig.message_to(ON_DUTY, "motor_temp on conveyor-1"))
    assert (await rig.reply(ON_DUTY, f"no {deny_code}")).startswith("Denied: shutdown_motor")
    assert (await second.result()).status == "denied"
    assert (await rig.reply(ON_DUTY, "Yes")).startswith("Approved")  # now only one is left
    assert (await first.result()).approved_by == ON_DUTY


async def test_forged_tampered_and_unknown_messages_change_nothing(rig: Rig) -> None:
    handle = await rig.start(6.0)
    code = code_in(await rig.message_to(ON_DUTY, "Reply YES"))
    url = rig.settings.public_url + "/webhooks/twilio/whatsapp"
    form = {"From": ON_DUTY, "Body": f"YES {code}", "MessageSid": "SMx", "NumMedia": "0"}
    async with httpx.AsyncClient(base_url=rig.settings.api_url) as http:
        forged = await http.post(
            "/webhooks/twilio/whatsapp",
            data=form,
            headers={"X-Twilio-Signature": sign("not-the-token", url, form)},
        )
        assert forged.status_code == 403
        tampered_form = {**form, "From": BACKUP}  # signed for one sender, sent as another
        tampered = await http.post(
            "/webhooks/twilio/whatsapp",
            data=tampered_form,
            headers={"X-Twilio-Signature": sign(rig.twilio.auth_token, url, form)},
        )
        assert tampered.status_code == 403
        unsigned = await http.post("/webhooks/twilio/whatsapp", data=form)
        assert unsigned.status_code == 403
    said = await rig.reply("whatsapp:+19995550000", f"YES {code}")
    assert "not authorised" in said
    assert await handle.query(DriftResponseWorkflow.pending_approval) is not None  # still waiting
    assert (await rig.reply(ON_DUTY, f"NO {code}")).startswith("Denied")
    assert (await handle.result()).status == "denied"


async def test_duplicate_and_late_replies_have_no_second_effect(rig: Rig) -> None:
    handle = await rig.start(6.0)
    code = code_in(await rig.message_to(ON_DUTY, "Reply YES"))
    assert (await rig.reply(ON_DUTY, f"YES {code}")).startswith("Approved")
    await handle.result()
    again = await rig.reply(ON_DUTY, f"YES {code}")
    assert again == f"Request {code} is no longer open (approved). Nothing was done."
    writes = await rig.pool.fetchval(
        "SELECT count(*) FROM plc_writes WHERE workflow_id = $1", handle.id
    )
    assert writes == 1
    unknown = await rig.reply(ON_DUTY, "YES 0000" if code != "0000" else "YES 1111")
    assert "No request with code" in unknown


async def test_timeout_escalates_to_the_backup_then_a_late_yes_is_refused(
    rig: Rig, record_history: Any
) -> None:
    fast = rig.settings.model_copy(update={"approval_timeout_s": 1.5})
    # A short approval timer: a second stack (workers only) on its own queue.
    stack = Stack(
        fast.model_copy(update={"task_queue": rig.settings.task_queue + "-fast"}),
        rig.stack.plant,
        rig.stack.client,
        run_ingest=False,
        run_api=False,
        run_edge_worker=False,
    )
    await stack.start()
    try:
        a = make_alert(6.0)
        handle = await rig.stack.client.start_workflow(
            DriftResponseWorkflow.run,
            a,
            id=f"{a.workflow_id}-{uuid.uuid4().hex[:6]}",
            task_queue=stack.settings.task_queue,
        )
        first = await rig.message_to(ON_DUTY, "Reply YES")
        escalated = await rig.message_to(BACKUP, "escalated")
        assert code_in(escalated) == code_in(first)
        result = await handle.result()
        await record_history(handle, "drift_response_not_approved_in_time")
        assert result.status == "not_approved_in_time" and result.value_written is None
        late = await rig.reply(BACKUP, f"YES {code_in(escalated)}")
        assert (
            late == f"Request {code_in(escalated)} is no longer open (expired). Nothing was done."
        )
        assert await rig.sim.read("motor_run") == 1
    finally:
        await stack.stop()


async def test_outside_the_session_window_the_template_is_used(rig: Rig) -> None:
    templated = rig.settings.model_copy(
        update={
            "twilio_approval_template_sid": "HXapproval",
            "task_queue": rig.settings.task_queue + "-tpl",
        }
    )
    stack = Stack(
        templated,
        rig.stack.plant,
        rig.stack.client,
        run_ingest=False,
        run_api=False,
        run_edge_worker=False,
    )
    await stack.start()
    try:
        await rig.pool.execute("DELETE FROM whatsapp_sessions WHERE number = $1", ON_DUTY)
        a = make_alert(6.0, "current")
        handle = await rig.stack.client.start_workflow(
            DriftResponseWorkflow.run,
            a,
            id=f"{a.workflow_id}-{uuid.uuid4().hex[:6]}",
            task_queue=templated.task_queue,
        )
        message = await rig.message_to(ON_DUTY, "HXapproval")
        assert message.body == "" and message.content_variables is not None
        code = re.search(r'"3": "(\d{4})"', message.content_variables)
        assert code is not None
        # Answering opens the session: what follows is free-form text again.
        assert (await rig.reply(ON_DUTY, f"YES {code[1]}")).startswith("Approved")
        result = await handle.result()
        summary = await rig.message_to(ON_DUTY, f"Work order {result.work_order_id}")
        assert summary.content_sid is None
    finally:
        await stack.stop()


async def test_the_technicians_report_reaches_the_follow_up(rig: Rig, record_history: Any) -> None:
    handle = await rig.start(2.5)  # an auto action: no approval, a notice instead
    notice = await rig.message_to(ON_DUTY, "Auto-executed: reduce_motor_speed_to_60pct")
    assert "read back 1050" in notice.body
    result = await handle.result()
    ask = await rig.message_to(ON_DUTY, "reply with what you found")
    assert result.work_order_id is not None and result.work_order_id in ask.body
    said = await rig.reply(ON_DUTY, "Replaced the drive-end bearing, vibration normal")
    assert said.startswith(f"Thanks — recorded on {result.work_order_id}")
    follow_up = rig.stack.client.get_workflow_handle(
        f"outcome-{handle.id}-{(await handle.describe()).run_id[:8]}"
    )
    outcome = await follow_up.result()
    await record_history(follow_up, "outcome_followup_answered")
    await record_history(handle, "drift_response_auto_executed")
    assert outcome["answer"] == "Replaced the drive-end bearing, vibration normal"
    assert outcome["recorded"] is True  # classified into the event's memory
    event = await rig.pool.fetchrow(
        "SELECT resolved, action_taken FROM drift_events WHERE id = $1", result.event_id
    )
    assert event["resolved"] is True and event["action_taken"] == "replaced_bearing"
    row = await rig.pool.fetchrow(
        "SELECT * FROM outcome_requests WHERE workflow_id = $1", follow_up.id
    )
    assert row["status"] == "answered"
    assert await follow_up.query(OutcomeFollowUpWorkflow.answer) == outcome["answer"]


async def test_requests_of_ended_workflows_do_not_block_a_plain_yes(rig: Rig) -> None:
    await rig.pool.execute(
        """INSERT INTO approval_requests (workflow_id, code, recipient, action)
           VALUES ('drift-gone-vibration', '9999', $1, 'shutdown_motor')""",
        ON_DUTY,
    )
    handle = await rig.start(6.0)
    await rig.message_to(ON_DUTY, "Reply YES")
    assert (await rig.reply(ON_DUTY, "yes")).startswith("Approved: shutdown_motor")
    assert (await handle.result()).status == "completed"
    stale = await rig.pool.fetchval("SELECT status FROM approval_requests WHERE code = '9999'")
    assert stale == "expired"
