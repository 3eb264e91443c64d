"""The demo's narrator on the real database: rows written to the audit tables reach it through
the triggers' NOTIFY (migration 0020), and it prints one line for each."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from dev.demo.narrator import Narrator
from factorylm.settings import Settings
from helpers import until


@pytest.fixture
async def narrated(settings: Settings) -> AsyncIterator[list[str]]:
    lines: list[str] = []
    narrator = Narrator(settings.pg_dsn, lines.append)
    await narrator.start()
    yield lines
    await narrator.stop()


async def line_with(lines: list[str], text: str) -> str:
    found: str = await until(
        f"a narrated line with {text!r}", lambda: next((x for x in lines if text in x), None)
    )
    return found


async def test_a_message_is_narrated_with_its_recipient_and_channel(
    narrated: list[str], pool: asyncpg.Pool
) -> None:
    tag = uuid.uuid4().hex[:8]
    await pool.execute(
        """INSERT INTO notifications (dedup_key, channel, recipient, body)
           VALUES ($1, 'log', 'whatsapp:+15550400001', $2)""",
        f"narrator/{tag}",
        f"FactoryLM approval needed {tag}\nAlarm A1: vibration on conveyor-1 drifted",
    )
    assert await line_with(narrated, tag) == (
        f"message to whatsapp:+15550400001 on log: 'FactoryLM approval needed {tag} | "
        "Alarm A1: vibration on conveyor-1 drifted'"
    )


async def test_a_plc_write_is_narrated_when_requested_and_when_verified(
    narrated: list[str], pool: asyncpg.Pool
) -> None:
    action_id = f"drift-narrator-{uuid.uuid4().hex[:6]}/run/reduce_speed"
    await pool.execute(
        """INSERT INTO plc_writes (action_id, workflow_id, action, plc_id, target, approved_by,
               value_before, value_written, status)
           VALUES ($1, 'wf', 'reduce_speed', 'conveyor-1', 'speed_setpoint',
               'whatsapp:+15550400001', 100, 80, 'pending')""",
        action_id,
    )
    requested = await line_with(narrated, "requested")
    assert requested == (
        "PLC write reduce_speed: 80 to conveyor-1.speed_setpoint requested, "
        "approved by whatsapp:+15550400001"
    )
    await pool.execute(
        """UPDATE plc_writes SET status = 'verified', value_read_back = 80, completed_at = now()
           WHERE action_id = $1""",
        action_id,
    )
    assert await line_with(narrated, "verified") == (
        "PLC write reduce_speed: 80 to conveyor-1.speed_setpoint verified (was 100, read back 80)"
    )


async def test_alarms_and_their_workflow_starts_are_narrated(
    narrated: list[str], pool: asyncpg.Pool
) -> None:
    plc = f"narr-{uuid.uuid4().hex[:6]}"
    await pool.execute(
        """INSERT INTO alarm_journal (site, plc_id, metric, code, event, annunciation, detector)
           VALUES ('plant', $1, 'vibration', 'A77', 'raise', 'suppressed', 'window')""",
        plc,
    )
    assert await line_with(narrated, plc) == (
        f"alarm A77 (vibration on {plc}) raised by the window detector — "
        "suppressed: its PLC is offline"
    )
    workflow_id = f"drift-{plc}-vibration"
    ids = []
    for second in (1, 2):
        ids.append(
            await pool.fetchval(
                """INSERT INTO alarm_outbox (workflow_id, detected_at, alert)
                   VALUES ($1, now() + make_interval(secs => $2), $3::jsonb) RETURNING id""",
                workflow_id,
                second,
                json.dumps({"alarm_code": "A77"}),
            )
        )
    # Not narrated while pending: only the hand-off to Temporal is an event.
    await pool.execute(
        "UPDATE alarm_outbox SET delivered_at = now(), run_id = 'run0123456789' WHERE id = $1",
        ids[0],
    )
    assert await line_with(narrated, "started") == (
        f"workflow {workflow_id} started (run run01234) for alarm A77"
    )
    await pool.execute(
        "UPDATE alarm_outbox SET delivered_at = now(), run_id = 'run0123456789' WHERE id = $1",
        ids[1],
    )
    assert await line_with(narrated, "evidence") == (
        f"alarm A77 added to the open workflow {workflow_id} as evidence"
    )
    assert sum(workflow_id in line for line in narrated) == 2


async def test_an_unreadable_notification_is_skipped_and_the_next_one_narrated(
    narrated: list[str], pool: asyncpg.Pool
) -> None:
    await pool.execute("SELECT pg_notify('audit_events', 'not json')")
    await pool.execute(
        """SELECT pg_notify('audit_events', '{"table": "notifications", "op": "insert", "key": "x"}')"""
    )
    await pool.execute(
        """SELECT pg_notify('audit_events', '{"table": "pg_authid", "op": "insert", "key": "1"}')"""
    )
    wo = await pool.fetchval(
        """INSERT INTO work_orders (external_key, title, priority)
           VALUES ($1, 'vibration drift on conveyor-1 (+6.0σ)', 'HIGH') RETURNING id""",
        f"narrator/{uuid.uuid4().hex[:8]}",
    )
    assert await line_with(narrated, f"work order {wo} ") == (
        f"work order {wo} opened (HIGH): vibration drift on conveyor-1 (+6.0σ)"
    )
    assert not any("pg_authid" in line or "not json" in line for line in narrated)


async def test_a_messages_delivery_states_are_narrated_as_twilio_reports_them(
    narrated: list[str], pool: asyncpg.Pool
) -> None:
    address = f"whatsapp:+1555041{uuid.uuid4().int % 10000:04d}"
    mid = await pool.fetchval(
        """INSERT INTO outbound_messages (idem_key, kind, channel, address, body)
           VALUES ($1, 'approval', 'whatsapp', $2, 'FactoryLM approval needed') RETURNING id""",
        f"narrator/{uuid.uuid4().hex[:8]}",
        address,
    )
    for state, error in (("sent", None), ("delivered", None)):
        await pool.execute(
            "UPDATE outbound_messages SET state = $2, error_code = $3 WHERE id = $1",
            mid,
            state,
            error,
        )
        assert await line_with(narrated, f"{address} on whatsapp: {state}") == (
            f"message #{mid} to {address} on whatsapp: {state}"
        )
    failed = await pool.fetchval(
        """INSERT INTO outbound_messages (idem_key, kind, channel, address, body, state,
               error_code) VALUES ($1, 'page', 'whatsapp', $2, 'x', 'failed', '63016')
           RETURNING id""",
        f"narrator/{uuid.uuid4().hex[:8]}",
        address,
    )
    assert await line_with(narrated, f"#{failed} ") == (
        f"message #{failed} to {address} on whatsapp: failed (error 63016)"
    )
    # Queued (its insert) is not a line of its own: the text is narrated from notifications.
    assert not any(f"#{mid} " in line and "queued" in line for line in narrated)
