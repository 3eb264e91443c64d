"""Alarm management under the processes' own PostgreSQL roles (app/deployment.py): the ingest
keeps codes, the journal and expiring shelves; the API answers SHELVE/UNSHELVE; the agents
worker computes the KPIs; Grafana charts them. Each connects as a real login of its role."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from app.deployment import ROLES, apply_grants
from factorylm.alarms import alarm_kpis, alarm_reply
from factorylm.settings import PROJECT_ROOT, Settings
from helpers import TANK_METRICS, make_alert, modbus_plant, until
from ingest.alarms import AlarmConfig, AlarmGate

Denied = asyncpg.InsufficientPrivilegeError


@pytest.fixture(scope="module")
async def as_role(base_settings: Settings, postgres: None) -> AsyncIterator[dict[str, Settings]]:
    logins = {role.name: f"flm_alarm{os.getpid()}_{role.name}" for role in ROLES}
    conn = await asyncpg.connect(base_settings.pg_dsn)
    try:
        await apply_grants(conn)
        for role, login in logins.items():
            await conn.execute(f"DROP ROLE IF EXISTS {login}")
            await conn.execute(f"CREATE ROLE {login} LOGIN IN ROLE {role}")
        yield {
            role: base_settings.model_copy(update={"pg_user": login, "pg_password": None})
            for role, login in logins.items()
        }
    finally:
        for login in logins.values():
            await conn.execute(f"DROP ROLE IF EXISTS {login}")
        await conn.close()


async def test_the_ingest_role_keeps_codes_the_journal_and_expiring_shelves(
    as_role: dict[str, Settings], base_settings: Settings
) -> None:
    ingest = as_role["factorylm_ingest"].pg_dsn
    plant = modbus_plant([f"roles-{uuid.uuid4().hex[:6]}"], TANK_METRICS)
    plc = plant.plcs[0].id
    sent: list[object] = []
    gate = AlarmGate(ingest, plant, sent.append, config=AlarmConfig(tick_s=0.1))
    owner = await asyncpg.connect(base_settings.pg_dsn)
    try:
        await gate.start()
        code = gate.codes[(plc, "level")]
        gate(make_alert(5.0, "level", plc))
        await until(
            "the raise journalled",
            lambda: owner.fetchval(
                "SELECT count(*) FROM alarm_journal WHERE code = $1 AND event = 'raise'", code
            ),
        )
        assert len(sent) == 1
        await owner.execute(
            """INSERT INTO alarm_shelves (code, plc_id, metric, shelved_by, until)
               VALUES ($1, $2, 'level', 'whatsapp:+15550300002', now() + interval '1 second')""",
            code,
            plc,
        )
        await owner.execute("SELECT pg_notify('alarm_shelves', $1)", code)
        # Expired by the ingest role (UPDATE alarm_shelves, INSERT alarm_journal).
        assert (
            await until(
                "the shelf closed as expired",
                lambda: owner.fetchval(
                    "SELECT ended_by FROM alarm_shelves WHERE code = $1 AND ended_at IS NOT NULL",
                    code,
                ),
            )
            == "expired"
        )
        await until(
            "its unshelve journalled",
            lambda: owner.fetchval(
                "SELECT count(*) FROM alarm_journal WHERE code = $1 AND event = 'unshelve'", code
            ),
        )
        # Nothing was raised while shelved: the alarm already sent is not sent again.
        assert len(sent) == 1
    finally:
        await gate.stop()
        await owner.close()
    conn = await asyncpg.connect(ingest)
    try:
        with pytest.raises(Denied):
            await conn.execute("DELETE FROM alarm_journal WHERE plc_id = $1", plc)
        with pytest.raises(Denied):
            await conn.execute(
                """INSERT INTO alarm_shelves (code, plc_id, metric, shelved_by, until)
                   VALUES ('A0', 'x', 'y', 'z', now() + interval '1 hour')"""
            )
    finally:
        await conn.close()


async def test_the_api_role_answers_shelve_and_unshelve_and_nothing_more(
    as_role: dict[str, Settings], base_settings: Settings
) -> None:
    plc = f"roles-api-{uuid.uuid4().hex[:6]}"
    owner = await asyncpg.connect(base_settings.pg_dsn)
    try:
        code = await owner.fetchval(
            "INSERT INTO alarm_points (plc_id, metric) VALUES ($1, 'temp') RETURNING code", plc
        )
        await owner.execute(
            """INSERT INTO alarm_journal (site, plc_id, metric, code, event, annunciation)
               VALUES ('plant', $1, 'temp', $2, 'raise', 'sent')""",
            plc,
            code,
        )
    finally:
        await owner.close()
    pool = await asyncpg.create_pool(as_role["factorylm_api"].pg_dsn, min_size=1, max_size=2)
    try:
        who = "whatsapp:+15550300003"
        shelved = await alarm_reply(pool, who, f"SHELVE {code} 1h", 8 * 3600)
        assert shelved is not None and "is shelved until" in shelved
        unshelved = await alarm_reply(pool, who, f"UNSHELVE {code}", 8 * 3600)
        assert unshelved is not None and "is unshelved" in unshelved
        with pytest.raises(Denied):
            await pool.execute("UPDATE alarm_points SET plc_id = 'x' WHERE code = $1", code)
        with pytest.raises(Denied):
            await pool.execute("DELETE FROM alarm_shelves WHERE code = $1", code)
    finally:
        await pool.close()


async def test_the_agents_role_computes_the_kpis_and_grafana_runs_the_alarm_panels(
    as_role: dict[str, Settings],
) -> None:
    now = datetime.now(UTC)
    pool = await asyncpg.create_pool(as_role["factorylm_agents"].pg_dsn, min_size=1, max_size=2)
    try:
        kpis = await alarm_kpis(pool, now - timedelta(hours=24), now, flood_alarms=10)
        assert kpis.flood_threshold == 10
    finally:
        await pool.close()
    board = json.loads((PROJECT_ROOT / "grafana/dashboards/plant-health.json").read_text())
    panels = [p for p in board["panels"] if "alarm_journal" in p["targets"][0]["rawSql"]]
    assert len(panels) == 4
    conn = await asyncpg.connect(as_role["grafana_reader"].pg_dsn)
    try:
        for panel in panels:
            sql = (
                panel["targets"][0]["rawSql"]
                .replace("$__timeFilter(at)", "at BETWEEN now() - interval '6 hours' AND now()")
                .replace("$__timeFrom()", "(now() - interval '6 hours')")
                .replace("$__timeTo()", "now()")
            )
            await conn.fetch(sql)
        with pytest.raises(Denied):
            await conn.execute("SELECT code FROM alarm_points")
    finally:
        await conn.close()


async def test_a_shelf_that_ran_out_unclosed_gives_way_and_simultaneous_shelves_leave_one(
    as_role: dict[str, Settings], base_settings: Settings
) -> None:
    plc = f"roles-api2-{uuid.uuid4().hex[:6]}"
    owner = await asyncpg.connect(base_settings.pg_dsn)
    try:
        code = await owner.fetchval(
            "INSERT INTO alarm_points (plc_id, metric) VALUES ($1, 'temp') RETURNING code", plc
        )
        await owner.execute(
            """INSERT INTO alarm_journal (site, plc_id, metric, code, event, annunciation)
               VALUES ('plant', $1, 'temp', $2, 'raise', 'sent')""",
            plc,
            code,
        )
        # Ran out an hour ago with no ingest running to close it.
        await owner.execute(
            """INSERT INTO alarm_shelves (code, plc_id, metric, shelved_by, shelved_at, until)
               VALUES ($1, $2, 'temp', 'whatsapp:+15550300004', now() - interval '2 hours',
                       now() - interval '1 hour')""",
            code,
            plc,
        )
        pool = await asyncpg.create_pool(as_role["factorylm_api"].pg_dsn, min_size=2, max_size=4)
        try:
            who = "whatsapp:+15550300003"
            answer = await alarm_reply(pool, who, f"SHELVE {code} 1h", 8 * 3600)
            assert answer is not None and "is shelved until" in answer
            rows = await owner.fetch(
                "SELECT ended_by FROM alarm_shelves WHERE code = $1 ORDER BY id", code
            )
            assert [r["ended_by"] for r in rows] == ["expired", None]
            events = await owner.fetch(
                "SELECT event, detail FROM alarm_journal WHERE code = $1 ORDER BY id", code
            )
            assert [(e["event"], e["detail"]) for e in events][1] == (
                "unshelve",
                "shelf time ran out",
            )
            # Two people shelve it at the same moment: every answer is a clear one (never an
            # error), and one shelf is open afterwards.
            answers = await asyncio.gather(
                *(alarm_reply(pool, who, f"SHELVE {code} 2h", 8 * 3600) for _ in range(4))
            )
            for a in answers:
                assert a is not None
                assert "is shelved until" in a or a == (
                    f"Alarm {code} was shelved by someone else just now. Nothing was changed."
                )
            assert (
                await owner.fetchval(
                    "SELECT count(*) FROM alarm_shelves WHERE code = $1 AND ended_at IS NULL",
                    code,
                )
                == 1
            )
        finally:
            await pool.close()
    finally:
        await owner.close()
