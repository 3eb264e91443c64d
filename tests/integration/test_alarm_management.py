"""Alarm management after ISA-18.2 on the real stack: the real ingest polls simulated Modbus
PLCs (dev/simulator) and its detector raises the alarms; PostgreSQL keeps the journal and the
shelves; the drift workflows are started on a real Temporal dev server; replies come through
the real API's signed WhatsApp webhook; a flood's grouped message goes through a real worker
running NotifyActivities.send_message."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.notify import NotifyActivities
from api.app import create_app
from dev.demo.narrator import Narrator
from dev.fakes.server import LocalServer
from dev.fakes.twilio import post_inbound
from dev.simulator.modbus import SimulatedModbusPlc
from dev.simulator.signals import FaultKind
from factorylm.models.drift import drift_workflow_id
from factorylm.plant import Plant
from factorylm.settings import Settings
from helpers import TANK_METRICS, SwitchableProxy, free_port, make_alert, modbus_plant, until
from ingest.alarms import AlarmConfig, AlarmGate
from ingest.drift import DriftConfig
from ingest.outbox import OutboxConfig
from ingest.service import IngestService
from workflows.alarm_notice import AlarmNoticeWorkflow

PERSON = "whatsapp:+15550300001"
FAST = OutboxConfig(backoff_initial_s=0.2, backoff_max_s=1.0, rpc_timeout_s=2.0)


@dataclass
class Rig:
    settings: Settings
    plant: Plant
    sims: dict[str, SimulatedModbusPlc]
    ingest: IngestService
    pool: asyncpg.Pool
    client: Client

    def code(self, plc_id: str, metric: str) -> str:
        return self.ingest.alarms.codes[(plc_id, metric)]

    async def journal(self, plc_id: str, metric: str) -> list[tuple[str, str | None]]:
        rows = await self.pool.fetch(
            """SELECT event, annunciation FROM alarm_journal
               WHERE plc_id = $1 AND metric = $2 ORDER BY id""",
            plc_id,
            metric,
        )
        return [(r["event"], r["annunciation"]) for r in rows]

    async def outbox_rows(self, plc_id: str, metric: str) -> int:
        n: int = await self.pool.fetchval(
            "SELECT count(*) FROM alarm_outbox WHERE workflow_id = $1",
            drift_workflow_id(self.plant.sites[0].name, plc_id, metric),
        )
        return n


async def make_rig(
    settings: Settings, client: Client, pool: asyncpg.Pool, stack: AsyncExitStack, **alarm: object
) -> Rig:
    tag = uuid.uuid4().hex[:6]
    plant = modbus_plant([f"alarm-{tag}-{i}" for i in range(2)], TANK_METRICS)
    plant = plant.model_copy(update={"name": f"site_{tag}"})
    # Nobody runs drift workflows on this queue: they are started (the alarm was sent), no more.
    s = settings.model_copy(update={"task_queue": f"alarms-{tag}", "approvers": [PERSON]})
    sims = {p.id: SimulatedModbusPlc(p, seed=3 + i, tick_s=0.025) for i, p in enumerate(plant.plcs)}
    for sim in sims.values():
        await sim.start()
        stack.push_async_callback(sim.stop)
    config = AlarmConfig(
        site=plant.name,
        recipients=(PERSON,),
        notice_task_queue=s.task_queue,
        tick_s=0.1,
        **alarm,  # type: ignore[arg-type]
    )
    ingest = IngestService(
        s,
        plant,
        client,
        drift=DriftConfig(window_s=0.5, on_delay_s=0.0, min_samples=3),
        outbox=FAST,
        alarms=config,
    )
    await ingest.start()
    stack.push_async_callback(ingest.stop)

    async def terminate() -> None:
        for p in plant.plcs:
            for m in p.metrics:
                try:
                    await client.get_workflow_handle(
                        drift_workflow_id(p.site, p.id, m.name)
                    ).terminate()
                except Exception:
                    pass  # never started

    stack.push_async_callback(terminate)
    await until("samples from every PLC", lambda: all(c.cycles >= 5 for c in ingest.collectors))
    return Rig(s, plant, sims, ingest, pool, client)


@pytest.fixture
async def exits() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def test_shelve_by_reply_hides_the_alarm_and_unshelve_sends_it_while_it_still_stands(
    settings: Settings, client: Client, pool: asyncpg.Pool, exits: AsyncExitStack
) -> None:
    rig = await make_rig(settings, client, pool, exits, flood_alarms=0)
    plc = rig.plant.plcs[0].id
    code, quiet = rig.code(plc, "pressure"), rig.code(plc, "temp")
    assert re.fullmatch(r"A\d+", code) and code != quiet
    # The real API, its webhook checking Twilio's signature over its public URL.
    port = free_port()
    s = rig.settings.model_copy(
        update={
            "twilio_auth_token": SecretStr("shelve-test-token"),
            "public_url": f"http://127.0.0.1:{port}",
        }
    )
    server = LocalServer(create_app(s, client, pool), port=port)
    await server.start()
    exits.push_async_callback(server.stop)

    async def reply(text: str) -> str:
        response = await post_inbound(server.url, s.public_url, "shelve-test-token", PERSON, text)
        assert response.status_code == 200, response.text
        said = re.search(r"<Message>(.*)</Message>", response.text, re.S)
        assert said is not None
        return html.unescape(said[1])

    # Not active yet: nothing to shelve.
    answer = await reply(f"SHELVE {code} 2h")
    assert (
        f"Alarm {code}" in answer and "is not active" in answer and "Nothing was shelved" in answer
    )
    assert await pool.fetchval("SELECT count(*) FROM alarm_shelves WHERE code = $1", code) == 0

    rig.sims[plc].inject("pressure", FaultKind.STEP, 6.0)
    await until("the alarm sent", lambda: rig.outbox_rows(plc, "pressure"))
    (row,) = await pool.fetch(
        "SELECT alert->>'alarm_code' AS code FROM alarm_outbox WHERE workflow_id = $1",
        drift_workflow_id(rig.plant.sites[0].name, plc, "pressure"),
    )
    assert row["code"] == code  # the code travels with the alarm into its messages
    assert ("raise", "sent") in await rig.journal(plc, "pressure")

    # Bad input: longer than the maximum (8 h by default), an unknown code, unshelving an
    # alarm that is not shelved — each says so and changes nothing.
    answer = await reply(f"SHELVE {code} 9h")
    assert "at most 8 h, not 9 h" in answer and "Nothing was shelved" in answer
    assert "There is no alarm A999999" in await reply("SHELVE A999999 1h")
    assert "is not shelved" in await reply(f"UNSHELVE {code}")
    assert "For how long?" in await reply(f"shelve {code}")
    assert await pool.fetchval("SELECT count(*) FROM alarm_shelves WHERE code = $1", code) == 0

    answer = await reply(f"shelve {code.lower()} 2h")
    assert f"Alarm {code} (pressure on {plc}) is shelved until" in answer and "(2 h)" in answer
    shelf = await pool.fetchrow("SELECT * FROM alarm_shelves WHERE code = $1", code)
    assert shelf["shelved_by"] == PERSON and shelf["ended_at"] is None
    assert timedelta(hours=2) - (shelf["until"] - shelf["shelved_at"]) < timedelta(seconds=1)
    await until(
        "the ingest holds the shelf", lambda: (plc, "pressure") in rig.ingest.alarms._shelves
    )

    # While shelved, the alarm is raised again: recorded as shelved, nothing sent.
    rig.sims[plc].clear("pressure")
    await until("the alarm cleared", lambda: _has(rig, plc, "clear"))
    sent_before = await rig.outbox_rows(plc, "pressure")
    rig.sims[plc].inject("pressure", FaultKind.STEP, 6.0)
    await until("a shelved raise", lambda: _count(rig, plc, "pressure", "shelved"))
    assert await rig.outbox_rows(plc, "pressure") == sent_before

    answer = await reply(f"UNSHELVE {code}")
    assert f"Alarm {code} (pressure on {plc}) is unshelved" in answer
    # Still standing: annunciated at once (its workflow gets the alarm).
    await until(
        "the standing alarm sent on unshelve",
        lambda: _more_rows(rig, plc, "pressure", sent_before),
    )
    events = [e for e, _ in await rig.journal(plc, "pressure")]
    assert events.count("shelve") == 1 and events.count("unshelve") == 1
    assert (
        await pool.fetchval(
            "SELECT ended_by FROM alarm_shelves WHERE code = $1 AND ended_at IS NOT NULL", code
        )
        == PERSON
    )


async def _has(rig: Rig, plc: str, event: str) -> bool:
    return any(e == event for e, _ in await rig.journal(plc, "pressure"))


async def _count(rig: Rig, plc: str, metric: str, annunciation: str) -> int:
    return sum(1 for _, a in await rig.journal(plc, metric) if a == annunciation)


async def _more_rows(rig: Rig, plc: str, metric: str, than: int) -> bool:
    return await rig.outbox_rows(plc, metric) > than


async def test_a_silent_plc_has_its_drift_alarms_suppressed_not_sent(
    settings: Settings, client: Client, pool: asyncpg.Pool, exits: AsyncExitStack
) -> None:
    rig = await make_rig(settings, client, pool, exits, flood_alarms=0)
    silent, healthy = (p.id for p in rig.plant.plcs)
    await rig.sims[silent].set_offline(True)
    await until(
        "the collector failing",
        lambda: (
            rig.ingest.manager.state(next(c for c in rig.ingest.collectors if c.plc.id == silent))
            == "failing"
        ),
    )
    # The alarms a silent PLC's last readings could raise, per metric, as the detector hands
    # them over: each journalled as suppressed, none reaches the outbox.
    for metric in ("level", "pressure", "temp"):
        rig.ingest.alarms(make_alert(5.0, metric, silent))
    rig.ingest.alarms(make_alert(5.0, "level", healthy))
    await until("the healthy PLC's alarm sent", lambda: rig.outbox_rows(healthy, "level"))
    for metric in ("level", "pressure", "temp"):
        assert await until(
            f"{metric} journalled",
            lambda m=metric: rig.journal(silent, m),  # type: ignore[misc]
        ) == [("raise", "suppressed")]
        assert await rig.outbox_rows(silent, metric) == 0
    # (The detector never held it in alarm, so the next samples journal its clear.)
    assert (await rig.journal(healthy, "level"))[0] == ("raise", "sent")


async def test_a_flood_is_one_grouped_message_listing_the_alarms_beyond_the_limit(
    settings: Settings,
    client: Client,
    pool: asyncpg.Pool,
    exits: AsyncExitStack,
    record_history: Callable[[WorkflowHandle[Any, Any], str], Awaitable[None]],
) -> None:
    rig = await make_rig(settings, client, pool, exits, flood_alarms=3, gather_s=1.0)
    # A real worker sends the grouped message (the log channel: no Twilio account here); it
    # runs only the notice workflow, so the drift workflows stay started, not run.
    notify = NotifyActivities(pool, rig.settings)
    worker = Worker(
        client,
        task_queue=rig.settings.task_queue,
        workflows=[AlarmNoticeWorkflow],
        activities=[notify.send_message],
    )
    await exits.enter_async_context(worker)
    for sim in rig.sims.values():
        for metric in ("level", "pressure", "temp"):
            sim.inject(metric, FaultKind.STEP, 6.0)
    points = [(p.id, m) for p in rig.plant.plcs for m in ("level", "pressure", "temp")]
    await until(
        "all six raised",
        lambda: rig.ingest.alarms.counts["sent"] + rig.ingest.alarms.counts["flood"] >= 6,
    )
    site = rig.plant.name
    message = await until(
        "the grouped message",
        lambda: pool.fetchrow(
            "SELECT * FROM notifications WHERE dedup_key LIKE $1", f"alarm-flood/{site}/%"
        ),
    )
    assert message["recipient"] == PERSON
    flooded = await pool.fetch(
        """SELECT code FROM alarm_journal WHERE site = $1 AND annunciation = 'flood'""", site
    )
    sent = await pool.fetch(
        """SELECT code FROM alarm_journal WHERE site = $1 AND annunciation = 'sent'""", site
    )
    assert len(sent) == 3 and len(flooded) == 3
    body = message["body"]
    assert body.startswith(f"FactoryLM alarm flood on {site}: more than 3 alarms")
    for r in flooded:
        assert f"Alarm {r['code']}:" in body
    for r in sent:
        assert f"Alarm {r['code']}:" not in body  # those had their own messages
    assert sum([await rig.outbox_rows(p, m) > 0 for p, m in points]) == 3
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM notifications WHERE dedup_key LIKE $1", f"alarm-flood/{site}/%"
        )
        == 1
    )
    (notice,) = rig.ingest.alarms.notices
    handle = client.get_workflow_handle(notice.dedup_key.replace("/", "-"))
    assert await handle.result() == 1  # one message, to the one on-duty person
    await record_history(handle, "alarm_notice_flood")


async def test_an_alarm_raised_more_than_k_times_an_hour_is_flagged_as_chattering(
    settings: Settings, client: Client, pool: asyncpg.Pool, exits: AsyncExitStack
) -> None:
    rig = await make_rig(settings, client, pool, exits, flood_alarms=0, chatter_raises=2)
    plc = rig.plant.plcs[1].id
    for n in range(1, 4):
        rig.sims[plc].inject("temp", FaultKind.STEP, 6.0)
        await until(f"raise {n}", lambda n=n: _at_least(rig, plc, "temp", "sent", n))  # type: ignore[misc]
        rig.sims[plc].clear("temp")
        await until(
            f"clear {n}",
            lambda n=n: _events(rig, plc, "temp", "clear", n),  # type: ignore[misc]
        )
    events = [e for e, _ in await rig.journal(plc, "temp")]
    # Flagged with the third raise (more than 2), once: later ones within the hour are not.
    # (One fault may raise more than once when several detectors watch the metric.)
    raises = [i for i, e in enumerate(events) if e == "raise"]
    assert events.count("chatter") == 1 and events.index("chatter") == raises[2] - 1
    detail = await pool.fetchval(
        "SELECT detail FROM alarm_journal WHERE plc_id = $1 AND event = 'chatter'", plc
    )
    assert detail == "3 raises within 60 min (more than 2): a bad actor"
    rig.sims[plc].inject("temp", FaultKind.STEP, 6.0)
    await until("raise 4", lambda: _at_least(rig, plc, "temp", "sent", 4))
    assert [e for e, _ in await rig.journal(plc, "temp")].count("chatter") == 1


async def _events(rig: Rig, plc: str, metric: str, event: str, n: int) -> bool:
    return sum(1 for e, _ in await rig.journal(plc, metric) if e == event) >= n


async def _at_least(rig: Rig, plc: str, metric: str, annunciation: str, n: int) -> bool:
    return await _count(rig, plc, metric, annunciation) >= n


async def test_a_shelf_whose_time_ran_out_is_closed_and_its_standing_alarm_sent(
    settings: Settings, client: Client, pool: asyncpg.Pool, exits: AsyncExitStack
) -> None:
    rig = await make_rig(settings, client, pool, exits, flood_alarms=0)
    plc = rig.plant.plcs[0].id
    code = rig.code(plc, "level")
    rig.sims[plc].inject("level", FaultKind.STEP, 6.0)
    await until("the alarm sent", lambda: rig.outbox_rows(plc, "level"))
    rig.sims[plc].clear("level")
    await until("the alarm cleared", lambda: _events(rig, plc, "level", "clear", 1))
    # A shelf of a few seconds (a reply shelves for minutes at least), announced as the API does.
    await pool.execute(
        """INSERT INTO alarm_shelves (code, plc_id, metric, shelved_by, until)
           VALUES ($1, $2, 'level', $3, now() + interval '3 seconds')""",
        code,
        plc,
        PERSON,
    )
    await pool.execute("SELECT pg_notify('alarm_shelves', $1)", code)
    await until("the ingest holds the shelf", lambda: (plc, "level") in rig.ingest.alarms._shelves)
    sent = await rig.outbox_rows(plc, "level")
    rig.sims[plc].inject("level", FaultKind.STEP, 6.0)
    await until("a shelved raise", lambda: _count(rig, plc, "level", "shelved"))
    assert await rig.outbox_rows(plc, "level") == sent
    # The time runs out with the alarm still standing: closed by the ingest, and sent.
    await until("the standing alarm sent", lambda: _more_rows(rig, plc, "level", sent))
    shelf = await pool.fetchrow("SELECT * FROM alarm_shelves WHERE code = $1", code)
    assert shelf["ended_by"] == "expired" and shelf["ended_at"] == shelf["until"]
    assert await pool.fetchval(
        "SELECT detail FROM alarm_journal WHERE code = $1 AND event = 'unshelve'", code
    ) == ("shelf time ran out")


async def test_alarms_held_in_a_flood_go_to_their_workflows_when_it_is_over(
    settings: Settings, client: Client, pool: asyncpg.Pool, exits: AsyncExitStack
) -> None:
    # A 2 s window: the flood is over two seconds after its last alarm.
    rig = await make_rig(
        settings, client, pool, exits, flood_alarms=3, flood_window_s=2.0, gather_s=0.5
    )
    points = [(p.id, m) for p in rig.plant.plcs for m in ("level", "pressure", "temp")]
    for sim in rig.sims.values():
        for metric in ("level", "pressure", "temp"):
            sim.inject(metric, FaultKind.STEP, 6.0)
    await until("three held in the flood", lambda: rig.ingest.alarms.counts["flood"] >= 3)
    assert rig.ingest.alarms.counts["flood"] == 3
    # Still standing when it is over: every one reaches its workflow, none is lost.
    for plc, metric in points:
        await until(f"{plc}/{metric} sent", partial(rig.outbox_rows, plc, metric))
    assert rig.ingest.alarms.flood_messages == 1


async def test_the_demo_narrator_tells_an_injected_faults_alarm_and_its_workflow_start(
    settings: Settings, client: Client, pool: asyncpg.Pool, exits: AsyncExitStack
) -> None:
    rig = await make_rig(settings, client, pool, exits, flood_alarms=0)
    lines: list[str] = []
    narrator = Narrator(rig.settings.pg_dsn, lines.append)
    await narrator.start()
    exits.push_async_callback(narrator.stop)
    plc = rig.plant.plcs[1].id
    code = rig.code(plc, "pressure")
    rig.sims[plc].inject("pressure", FaultKind.STEP, 6.0)
    # The detector that fires first depends on the metric's configuration (window, EWMA…).
    raised = await until(
        "the alarm narrated",
        lambda: next(
            (
                x
                for x in lines
                if x.startswith(f"alarm {code} (pressure on {plc}) raised by the ")
                and x.endswith(" detector — sent to its workflow")
            ),
            None,
        ),
    )
    started = await until(
        "the workflow start narrated",
        lambda: next(
            (
                x
                for x in lines
                if x.startswith(f"workflow drift-{rig.plant.sites[0].name}-{plc}-pressure")
            ),
            None,
        ),
    )
    run_id = (
        await client.get_workflow_handle(
            drift_workflow_id(rig.plant.sites[0].name, plc, "pressure")
        ).describe()
    ).run_id
    assert (
        started
        == f"workflow drift-{rig.plant.sites[0].name}-{plc}-pressure started (run {run_id[:8]}) for alarm {code}"
    )
    assert lines.index(raised) < lines.index(started)


async def test_alarms_journalled_while_postgres_is_away_are_written_when_it_is_back(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    # The gate's database behind a proxy that can be cut (a PostgreSQL outage on demand).
    proxy = SwitchableProxy(settings.pg_port)
    await proxy.start()
    via_proxy = settings.model_copy(update={"pg_port": proxy.port})
    plant = modbus_plant([f"alarm-pg-{uuid.uuid4().hex[:6]}"], TANK_METRICS)
    plc = plant.plcs[0].id
    sent: list[object] = []
    gate = AlarmGate(via_proxy.pg_dsn, plant, sent.append, config=AlarmConfig(tick_s=0.1))
    await gate.start()
    try:
        code = gate.codes[(plc, "temp")]
        proxy.cut()
        for _ in range(3):
            gate(make_alert(5.0, "temp", plc))
        # The alarms are not held back by the outage: they go on to the outbox at once.
        assert len(sent) == 3
        proxy.up = True
        await until(
            "the three raises journalled after the outage",
            lambda: _journalled(pool, code, 3),
        )
        # The shelves' LISTEN connection died with the outage: it is made again, so a shelf
        # set now is heard.
        await pool.execute(
            """INSERT INTO alarm_shelves (code, plc_id, metric, shelved_by, until)
               VALUES ($1, $2, 'temp', $3, now() + interval '1 hour')""",
            code,
            plc,
            PERSON,
        )
        await pool.execute("SELECT pg_notify('alarm_shelves', $1)", code)
        await until("the shelf heard", lambda: (plc, "temp") in gate._shelves)
        gate(make_alert(5.0, "temp", plc))
        assert len(sent) == 3  # shelved: not sent
    finally:
        await gate.stop()
        await proxy.close()


async def _journalled(pool: asyncpg.Pool, code: str, n: int) -> bool:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM alarm_journal WHERE code = $1 AND event = 'raise'", code
    )
    assert count <= n, "a raise written twice"
    return count == n


async def test_a_flood_message_still_gathering_is_sent_when_the_ingest_stops(
    settings: Settings, client: Client
) -> None:
    plant = modbus_plant([f"alarm-stop-{uuid.uuid4().hex[:6]}"], TANK_METRICS)
    plc = plant.plcs[0].id
    queue = f"alarms-stop-{uuid.uuid4().hex[:6]}"  # nobody runs it: the start is what counts
    config = AlarmConfig(
        site="stopping",
        flood_alarms=1,
        gather_s=600.0,
        recipients=(PERSON,),
        notice_task_queue=queue,
    )
    gate = AlarmGate(settings.pg_dsn, plant, lambda _a: None, client=client, config=config)
    await gate.start()
    stopped = False
    try:
        for metric in ("level", "pressure", "temp"):
            gate(make_alert(5.0, metric, plc))
        assert gate.flood_messages == 0  # ten minutes of gathering ahead
        await gate.stop()
        stopped = True
        (notice,) = gate.notices
        handle = client.get_workflow_handle(notice.dedup_key.replace("/", "-"))
        assert (await handle.describe()).task_queue == queue
        for metric in ("pressure", "temp"):  # the two beyond the limit of one
            assert f"{metric} on {plc}" in notice.body
        assert f"level on {plc}" not in notice.body
        await handle.terminate("test over")
    finally:
        if not stopped:
            await gate.stop()
