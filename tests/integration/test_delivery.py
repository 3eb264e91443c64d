"""The outbound path, rosters and escalation on the real stack: real Temporal, real PostgreSQL,
the API, and the local Twilio answering with refusals, late answers and signed status callbacks
(queued → sent → delivered, or undelivered with an ErrorCode) to the URL the client passed."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle
from twilio.base.exceptions import TwilioRestException

from activities.notify import NotifyActivities
from app.stack import Stack
from dev.fakes.server import LocalServer
from dev.fakes.twilio import FakeTwilio, SentMessage, post_inbound, sign
from dev.simulator.modbus import SimulatedModbusPlc
from factorylm.models.drift import DriftResponseResult
from factorylm.models.messages import SendMessageInput, SendReportInput
from factorylm.models.outcomes import RequestOutcomeInput
from factorylm.roster import ON_CALL, scheduled_recipients
from factorylm.settings import Settings
from helpers import free_port, make_alert, plant_with_free_ports, until
from ingest.alert_notifier import OutboundNotifier
from ingest.manager import CollectorAlert
from workflows.drift_response import DriftResponseWorkflow

# Numbers of their own (other modules leave requests to theirs); fictional 555-01xx style.
ANA_WA, ANA_SMS = "whatsapp:+15550400001", "+15550400011"
BEN_WA = "whatsapp:+15550400002"
CHO_SMS = "+15550400003"
SMS_FROM = "+15550409999"
GRAFANA = "http://grafana.plant.test:3000"
LONG = 600.0  # a step's timer no test waits out: anything sooner was not the timer


def roster(page_wait_s: float = LONG) -> dict[str, Any]:
    return {
        "people": [
            {"id": "ana", "whatsapp": ANA_WA.removeprefix("whatsapp:"), "sms": ANA_SMS},
            {"id": "ben", "whatsapp": BEN_WA.removeprefix("whatsapp:")},
            {"id": "cho", "sms": CHO_SMS},
        ],
        # One person on duty all week: the test does not depend on the hour it runs.
        "outside_shifts": {"on_duty": "ana", "backup": "ben"},
        "escalation": {
            "default": {
                "steps": [
                    {"notify": "on_duty", "wait_s": LONG},
                    {"notify": "backup", "wait_s": LONG},
                    {"notify": "cho", "wait_s": LONG},
                ]
            },
            "actions": {
                "send_alert_to_backup_tech": {
                    "steps": [
                        {"notify": "backup", "wait_s": page_wait_s},
                        {"notify": "on_duty", "wait_s": page_wait_s},
                    ]
                }
            },
        },
    }


@dataclass
class Rig:
    settings: Settings
    stack: Stack
    twilio: FakeTwilio
    pool: asyncpg.Pool

    async def start(self, sigma: float, metric: str) -> WorkflowHandle[Any, DriftResponseResult]:
        alert = make_alert(sigma, metric)
        return await self.stack.client.start_workflow(
            DriftResponseWorkflow.run,
            alert,
            id=f"{alert.workflow_id}-{uuid.uuid4().hex[:6]}",
            task_queue=self.settings.task_queue,
        )

    async def message_to(self, who: str, containing: str) -> SentMessage:
        def found() -> SentMessage | None:
            hits = [m for m in self.twilio.to(who) if containing in m.body]
            return hits[-1] if hits else None

        message: SentMessage = await until(f"a message to {who} with {containing!r}", found)
        return message

    async def reply(self, who: str, text: str) -> str:
        response = await post_inbound(
            self.settings.api_url, self.settings.public_url, self.twilio.auth_token, who, text
        )
        assert response.status_code == 200, response.text
        said = re.search(r"<Message>(.*)</Message>", response.text, re.S)
        assert said is not None
        return html.unescape(said[1])

    async def row(self, address: str, kind: str, workflow_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.pool.fetchrow(
            """SELECT * FROM outbound_messages
               WHERE address = $1 AND kind = $2 AND workflow_id = $3 ORDER BY id DESC LIMIT 1""",
            address,
            kind,
            workflow_id,
        )
        return row


@asynccontextmanager
async def _rig(
    tmp_path: Path,
    settings: Settings,
    client: Client,
    pool: asyncpg.Pool,
    *,
    page_wait_s: float = LONG,
    **overrides: Any,
) -> AsyncIterator[Rig]:
    twilio = FakeTwilio()
    server = LocalServer(twilio.app())
    await server.start()
    plant, _ = plant_with_free_ports(tmp_path)
    roster_file = tmp_path / "roster.yaml"
    roster_file.write_text(yaml.safe_dump(roster(page_wait_s)))
    queue = f"dl-{uuid.uuid4().hex[:8]}"
    port = free_port()
    s = settings.model_copy(
        update={
            "task_queue": queue,
            "plc_task_queue": f"{queue}-edge",
            "approvers": [],
            "roster_file": roster_file,
            "api_port": port,
            "public_url": f"http://127.0.0.1:{port}",
            "twilio_account_sid": twilio.account_sid,
            "twilio_auth_token": SecretStr(twilio.auth_token),
            "twilio_api_base_url": server.url,
            "twilio_sms_from": SMS_FROM,
            "grafana_url": GRAFANA,
            **overrides,
        }
    )
    sim = SimulatedModbusPlc(plant.plcs[0])
    await sim.start()
    stack = Stack(s, plant, client, run_ingest=False)
    await stack.start()
    rig = Rig(s, stack, twilio, pool)
    try:
        yield rig
    finally:
        await rig.stack.stop()  # a test may have replaced a stack it stopped
        await sim.stop()
        await server.stop()


@pytest.fixture
async def rig(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> AsyncIterator[Rig]:
    async with _rig(tmp_path, settings, client, pool) as r:
        yield r


def code_in(message: SentMessage) -> str:
    found = re.search(r"YES (\d{4})", message.body)
    assert found is not None, message.body
    return found[1]


async def test_an_undelivered_approval_request_escalates_at_once_to_the_next_person(
    rig: Rig, record_history: Any
) -> None:
    rig.twilio.undeliverable[BEN_WA] = 63024  # ben's phone is off
    # ana has an SMS number: make her unreachable on both, so the chain must move on.
    rig.twilio.undeliverable[ANA_WA] = 63024
    rig.twilio.undeliverable[ANA_SMS] = 30003
    handle = await rig.start(5.0, "vibration")  # shutdown_motor: approval
    first = await rig.message_to(ANA_WA, "approval needed")
    code = code_in(first)
    # Each step's timer is 10 minutes: cho is asked within seconds only because ana's two
    # channels and ben's WhatsApp were reported undelivered by Twilio's callbacks.
    to_cho = await rig.message_to(CHO_SMS, f"YES {code}")
    assert "(escalated: ben could not be reached)" in to_cho.body
    ana = await rig.row(ANA_WA, "approval", handle.id)
    assert ana is not None
    assert (ana["state"], ana["error_code"], ana["escalated"]) == ("failed", "63024", True)
    ben = await rig.row(BEN_WA, "approval", handle.id)
    assert ben is not None and (ben["state"], ben["error_code"]) == ("failed", "63024")
    assert "Approved" in await rig.reply(CHO_SMS, f"YES {code}")
    result = await handle.result()
    assert result.status == "completed" and result.approved_by == CHO_SMS
    await record_history(handle, "drift_response_escalated_on_failed_delivery")


async def test_a_whatsapp_failure_falls_back_to_sms_for_that_person(rig: Rig) -> None:
    rig.twilio.undeliverable[ANA_WA] = 63024
    handle = await rig.start(5.0, "vibration")
    whatsapp = await rig.message_to(ANA_WA, "approval needed")
    code = code_in(whatsapp)
    sms = await rig.message_to(ANA_SMS, f"YES {code}")
    assert sms.from_ == SMS_FROM and sms.body == whatsapp.body
    row = await until(
        "the SMS to be delivered",
        lambda: _delivered(rig, ANA_SMS, handle.id),
    )
    assert row["fallback_of"] is not None
    # The SMS reached her: nobody else was asked (the request waits on her step).
    status = await handle.query(DriftResponseWorkflow.status)
    assert status.startswith("waiting for ana") and not rig.twilio.to(BEN_WA)
    assert "Approved" in await rig.reply(ANA_SMS, f"YES {code}")
    assert (await handle.result()).approved_by == ANA_SMS


async def _delivered(rig: Rig, address: str, workflow_id: str) -> asyncpg.Record | None:
    row = await rig.row(address, "approval", workflow_id)
    return row if row is not None and row["state"] == "delivered" else None


async def test_a_refused_whatsapp_send_goes_out_by_sms_at_once(rig: Rig) -> None:
    # Twilio refuses the create call itself (63016: outside the 24-hour window, no template).
    rig.twilio.rejected[ANA_WA] = 63016
    handle = await rig.start(5.0, "vibration")
    sms = await rig.message_to(ANA_SMS, "approval needed")
    failed = await rig.row(ANA_WA, "approval", handle.id)
    assert failed is not None and (failed["state"], failed["error_code"]) == ("failed", "63016")
    assert failed["message_sid"] is None and not rig.twilio.to(ANA_WA)
    await rig.reply(ANA_SMS, f"NO {code_in(sms)}")
    assert (await handle.result()).status == "denied"


async def test_a_crash_between_send_and_record_duplicates_once_and_is_counted(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    async with _rig(tmp_path, settings, client, pool, twilio_timeout_s=1.0) as rig:
        # Twilio takes the first request but its answer comes after the client gave up: the
        # sender cannot know the message went out, and the activity's retry sends it again.
        rig.twilio.stall_next, rig.twilio.stall_s = 1, 4.0
        handle = await rig.start(5.0, "vibration")
        row = await until("the request to be delivered", lambda: _delivered(rig, ANA_WA, handle.id))
        copies = [m for m in rig.twilio.to(ANA_WA) if "approval needed" in m.body]
        assert len(copies) == 2 and copies[0].body == copies[1].body
        assert (row["attempts"], row["duplicates"]) == (2, 1)
        assert row["message_sid"] == copies[1].sid  # the copy whose answer arrived
        # The stalled copy's own callbacks arrive later and change nothing; no third copy.
        await until(
            "the first copy's callbacks",
            lambda: (
                len([c for c in rig.twilio.callbacks if c.form["MessageSid"] == copies[0].sid]) == 3
            ),
        )
        again = await rig.row(ANA_WA, "approval", handle.id)
        assert again is not None and again["message_sid"] == copies[1].sid
        assert again["state"] == "delivered"
        assert len([m for m in rig.twilio.to(ANA_WA) if "approval needed" in m.body]) == 2
        await rig.reply(ANA_WA, f"NO {code_in(copies[1])}")
        assert (await handle.result()).status == "denied"


async def test_a_worker_that_dies_between_send_and_record_duplicates_once_counted(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    async with _rig(tmp_path, settings, client, pool) as rig:
        # Twilio takes the request, then answers after 2 s: by then the worker (and the API,
        # where the message's status callbacks go) is gone, and nothing recorded the SID.
        rig.twilio.stall_next, rig.twilio.stall_s = 1, 2.0
        handle = await rig.start(5.0, "vibration")
        first = await rig.message_to(ANA_WA, "approval needed")
        await rig.stack.stop()
        await until(
            "the first copy's callbacks to find nobody",
            lambda: [c for c in rig.twilio.callbacks if c.form["MessageSid"] == first.sid],
        )
        assert all(c.answered == 0 for c in rig.twilio.callbacks)
        row = await rig.row(ANA_WA, "approval", handle.id)
        assert row is not None and (row["state"], row["message_sid"], row["in_flight"]) == (
            "queued",
            None,
            True,
        )
        # A new worker: the activity's retry finds the row unconfirmed, sends again, counts it.
        rig.stack = Stack(rig.settings, rig.stack.plant, client, run_ingest=False)
        await rig.stack.start()
        row = await until(
            "the resent request delivered",
            lambda: _delivered(rig, ANA_WA, handle.id),
            timeout_s=90,
        )
        copies = [m for m in rig.twilio.to(ANA_WA) if "approval needed" in m.body]
        assert len(copies) == 2 and copies[1].body == first.body
        assert (row["attempts"], row["duplicates"], row["message_sid"]) == (2, 1, copies[1].sid)
        await rig.reply(ANA_WA, f"NO {code_in(copies[1])}")
        assert (await handle.result()).status == "denied"


async def test_the_backup_is_paged_and_ack_stops_the_escalation(
    rig: Rig, record_history: Any
) -> None:
    handle = await rig.start(3.0, "current")  # send_alert_to_backup_tech: notify, auto
    page = await rig.message_to(BEN_WA, "FactoryLM page")
    found = re.search(r"ACK (\d{4})", page.body)
    assert found is not None, page.body
    assert f"{GRAFANA}/d/factorylm-plant" in page.body and "Details: http" in page.body
    said = await rig.reply(BEN_WA, f"ACK {found[1]}")
    assert f"Acknowledged page {found[1]}" in said
    result = await handle.result()
    assert result.action == "send_alert_to_backup_tech" and result.status == "completed"
    # The workflow has ended: ana, next in the chain, was never paged.
    assert not [m for m in rig.twilio.to(ANA_WA) if "FactoryLM page" in m.body]
    row = await rig.row(BEN_WA, "page", handle.id)
    assert row is not None and row["acked_by"] == BEN_WA
    assert result.work_order_id is not None
    description = await rig.pool.fetchval(
        "SELECT description FROM work_orders WHERE id = $1",
        int(result.work_order_id.removeprefix("WO-")),
    )
    assert f"acknowledged by {BEN_WA}" in description
    await record_history(handle, "drift_response_paged_backup_acked")


async def test_an_unacknowledged_page_goes_to_the_next_person(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    async with _rig(tmp_path, settings, client, pool, page_wait_s=2.0) as rig:
        handle = await rig.start(3.0, "current")
        await rig.message_to(BEN_WA, "FactoryLM page")  # ben does not answer
        page = await rig.message_to(ANA_WA, "FactoryLM page")
        assert "escalated: not acknowledged" in page.body
        assert "Acknowledged" in await rig.reply(ANA_WA, "ACK")  # the only open page
        result = await handle.result()
        assert result.status == "completed"
        assert await handle.query(DriftResponseWorkflow.acknowledged_by) == ANA_WA


async def test_auto_action_notices_carry_the_agents_summary_and_links(rig: Rig) -> None:
    handle = await rig.start(3.0, "vibration")  # reduce_motor_speed_to_60pct: auto
    notice = await rig.message_to(ANA_WA, "Auto-executed")
    assert "Agents (" in notice.body  # the agents' summary, as approval requests have it
    assert f"Graphs: {GRAFANA}/d/factorylm-plant/plant-health?var-plc=conveyor-1" in notice.body
    assert f"Details: {rig.settings.temporal_ui_url}/namespaces/" in notice.body
    assert handle.id in notice.body
    await handle.result()


async def test_a_status_callback_with_a_bad_signature_is_refused_and_changes_nothing(
    rig: Rig,
) -> None:
    handle = await rig.start(5.0, "vibration")
    await rig.message_to(ANA_WA, "approval needed")
    row = await until("ana's request delivered", lambda: _delivered(rig, ANA_WA, handle.id))
    url = f"{rig.settings.public_url}/webhooks/twilio/status?m={row['id']}"
    form = {
        "AccountSid": rig.twilio.account_sid,
        "MessageSid": row["message_sid"],
        "MessageStatus": "undelivered",
        "ErrorCode": "30003",
    }
    async with httpx.AsyncClient(timeout=10) as http:
        forged = await http.post(url, data=form, headers={"X-Twilio-Signature": "bm9wZQ=="})
        unsigned = await http.post(url, data=form)
        # Signed for another message id: the signature covers the query string too.
        other = sign(rig.twilio.auth_token, url.replace(f"m={row['id']}", "m=1"), form)
        moved = await http.post(url, data=form, headers={"X-Twilio-Signature": other})
    assert [forged.status_code, unsigned.status_code, moved.status_code] == [403, 403, 403]
    after = await rig.row(ANA_WA, "approval", handle.id)
    assert after is not None and dict(after) == dict(row)
    assert not rig.twilio.to(BEN_WA) and not rig.twilio.to(ANA_SMS)
    await handle.terminate("test over")


async def test_a_scheduled_message_reaches_whoever_is_on_duty_when_it_is_sent(rig: Rig) -> None:
    notify = NotifyActivities(rig.pool, rig.settings)
    assert scheduled_recipients(rig.settings) == [ON_CALL]  # a roster: resolved at send time
    key = f"daily/{uuid.uuid4().hex}"
    sent = await notify.send_message(
        SendMessageInput(dedup_key=key, recipients=[ON_CALL], body="FactoryLM daily summary")
    )
    assert sent == 1
    message = await rig.message_to(ANA_WA, "FactoryLM daily summary")  # ana: outside_shifts
    row = await rig.pool.fetchrow(
        "SELECT * FROM outbound_messages WHERE idem_key = $1", f"{key}/{ON_CALL}"
    )
    assert row["address"] == ANA_WA and row["message_sid"] == message.sid
    assert row["fallback"] == ANA_SMS  # the roster's SMS number, whoever sends
    again = await notify.send_message(
        SendMessageInput(dedup_key=key, recipients=[ON_CALL], body="FactoryLM daily summary")
    )
    assert again == 0 and len(rig.twilio.to(ANA_WA)) == 1  # a repeat sends nothing


async def test_a_collector_alert_reaches_the_person_on_duty_with_its_graphs(rig: Rig) -> None:
    since = datetime.now(UTC)
    alert = CollectorAlert(
        plc_id="press-1",
        vendor="siemens_s7",
        protocol="s7",
        consecutive_errors=3,
        last_error="connection refused",
        failing_since=since,
        dedup_key=f"collector/press-1/{since.isoformat()}-{uuid.uuid4().hex[:6]}",
        body="PLC press-1 (siemens_s7, s7 at 10.0.0.5:102) has failed 3 polls in a row",
    )
    # The ingest holds no Twilio secret: it hands the alert to a workflow the worker sends.
    await OutboundNotifier(rig.settings, rig.stack.client)(alert)
    message = await rig.message_to(ANA_WA, "press-1 (siemens_s7")
    assert message.body.startswith("FactoryLM alert: PLC press-1")
    assert f"Graphs: {GRAFANA}/d/factorylm-plant/plant-health?var-plc=press-1" in message.body
    assert "Details: http" in message.body  # the notice workflow in the Web UI


async def test_an_outcome_question_whose_send_failed_is_sent_by_the_retry(rig: Rig) -> None:
    notify = NotifyActivities(rig.pool, rig.settings)
    question = RequestOutcomeInput(
        workflow_id=f"outcome-{uuid.uuid4().hex[:8]}",
        event_id=1,
        recipient=ANA_WA,
        work_order_id="WO-000042",
        summary="vibration on conveyor-1",
    )
    rig.twilio.fail_next = 1  # Twilio answers 500 once
    with pytest.raises(TwilioRestException):
        await notify.request_outcome(question)
    assert not rig.twilio.to(ANA_WA)
    # The waiting row is there already; before, the retry saw it and asked nobody.
    await notify.request_outcome(question)
    (asked,) = rig.twilio.to(ANA_WA)
    assert "WO-000042" in asked.body and "reply with what you found" in asked.body
    row = await rig.pool.fetchrow(
        "SELECT * FROM outbound_messages WHERE idem_key = $1", f"outcome/{question.workflow_id}"
    )
    # Twilio answered the first attempt (with an error): the resend is no duplicate.
    assert (row["attempts"], row["duplicates"], row["message_sid"]) == (2, 0, asked.sid)


async def test_a_report_reaches_the_person_on_duty(rig: Rig) -> None:
    notify = NotifyActivities(rig.pool, rig.settings)
    key = f"baseline-report/{uuid.uuid4().hex[:8]}"
    report = SendReportInput(dedup_key=key, subject="Baselines updated", body="12 metrics")
    assert await notify.send_report(report) is True
    message = await rig.message_to(ANA_WA, "FactoryLM report: Baselines updated")
    assert "12 metrics" in message.body
    assert await notify.send_report(report) is False  # recorded once, sent once
    assert len(rig.twilio.to(ANA_WA)) == 1


async def test_callbacks_of_another_account_or_unknown_messages_change_nothing(rig: Rig) -> None:
    handle = await rig.start(5.0, "vibration")
    row = await until("ana's request delivered", lambda: _delivered(rig, ANA_WA, handle.id))
    url = f"{rig.settings.public_url}/webhooks/twilio/status"

    async def post(form: dict[str, str], query: str = "") -> int:
        signed = sign(rig.twilio.auth_token, url + query, form)
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(url + query, data=form, headers={"X-Twilio-Signature": signed})
        return answer.status_code

    undelivered = {"MessageStatus": "undelivered", "ErrorCode": "30003"}
    other_account = {"AccountSid": "AC" + "0" * 32, "MessageSid": row["message_sid"]}
    unknown = {"AccountSid": rig.twilio.account_sid, "MessageSid": "SM" + "f" * 32}
    statuses = [
        await post({**other_account, **undelivered}, f"?m={row['id']}"),
        await post({**unknown, **undelivered}),  # no message of ours
        await post({**unknown, **undelivered}, "?m=99999999999999999999999"),  # no such row
        await post({"AccountSid": rig.twilio.account_sid}),  # no MessageSid
    ]
    assert statuses == [400, 204, 204, 400]
    after = await rig.row(ANA_WA, "approval", handle.id)
    assert after is not None and dict(after) == dict(row)
    assert not rig.twilio.to(BEN_WA)
    await handle.terminate("test over")
