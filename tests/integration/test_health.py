"""The health monitor on the real stack: a PLC goes silent → one incident, one alert, one
collector restart in the ingest; it recovers → the incident closes. And the daily summary."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from temporalio.client import Client

from app.stack import Stack
from dev.simulator.modbus import SimulatedModbusPlc
from factorylm.models.health import (
    DailySummary,
    DailySummaryInput,
    HealthMonitorInput,
    HealthRunResult,
    SpoolLimits,
)
from factorylm.plant import Plant
from factorylm.settings import Settings
from factorylm.waiting import wait_for
from helpers import free_port, plant_with_free_ports
from temporal.schedules import BASELINE_SCHEDULE_ID, DAILY_SUMMARY_SCHEDULE_ID
from workflows.health import DailySummaryWorkflow, HealthMonitorWorkflow

ON_DUTY = "whatsapp:+15550400001"


@pytest.fixture
async def stack(
    tmp_path: Path, settings: Settings, client: Client
) -> AsyncIterator[tuple[Stack, SimulatedModbusPlc]]:
    full, _ = plant_with_free_ports(tmp_path)
    # One PLC of its own, so other tests' collectors do not enter this monitor's view.
    plc = full.plcs[0].model_copy(update={"id": f"hm-{uuid.uuid4().hex[:6]}"})
    # Named as the demo plant: its PLC belongs to that site.
    plant = Plant.model_validate({"name": full.name, "plcs": [plc]})
    path = tmp_path / "health-plant.yaml"
    path.write_text(yaml.safe_dump(plant.model_dump(mode="json", by_alias=True, exclude_none=True)))
    queue = f"health-{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(
        update={
            "task_queue": queue,
            "plc_task_queue": f"{queue}-edge",
            "approvers": [ON_DUTY],
            "plant_file": path,
            "api_port": free_port(),
        }
    )
    sim = SimulatedModbusPlc(plc)
    await sim.start()
    stack = Stack(s, plant, client)
    await stack.start()
    yield stack, sim
    await stack.stop()
    await sim.stop()


async def run_monitor(
    stack: Stack,
    record: Any = None,
    name: str = "",
    # Other tests' ingests report into the same table: by default no spool is in view.
    spool: SpoolLimits | None = None,
) -> HealthRunResult:
    s = stack.settings
    handle = await stack.client.start_workflow(
        HealthMonitorWorkflow.run,
        HealthMonitorInput(
            task_queues=[s.task_queue, s.edge_queue(stack.plant.sites[0].name)],
            schedule_ids=[BASELINE_SCHEDULE_ID, DAILY_SUMMARY_SCHEDULE_ID],
            recipients=[ON_DUTY],
            spool=spool or SpoolLimits(ingest_hosts=[]),
        ),
        id=f"health-test-{uuid.uuid4().hex[:6]}",
        task_queue=s.task_queue,
    )
    result = await handle.result()
    if record is not None:
        await record(handle, name)
    return result


async def collector_state(pool: asyncpg.Pool, plc_id: str) -> str | None:
    return await pool.fetchval("SELECT state FROM collector_status WHERE plc_id = $1", plc_id)  # type: ignore[no-any-return]


async def test_silent_plc_gives_one_alert_one_restart_then_recovers(
    stack: tuple[Stack, SimulatedModbusPlc], pool: asyncpg.Pool, record_history: Any
) -> None:
    st, sim = stack
    plc_id = sim.plc.id
    await wait_for("a healthy collector", lambda: _is(pool, plc_id, "ok"), timeout_s=30)
    healthy = await run_monitor(st)
    assert healthy.ok, healthy.failures
    assert healthy.checks == 1 + 2 + 2 + 2  # collector, database + vectors, 2 queues, 2 schedules
    assert healthy.trace_id is None or len(healthy.trace_id) == 32

    await sim.set_offline(True)
    await wait_for("the collector to fail", lambda: _is(pool, plc_id, "failing"), timeout_s=30)
    sick = await run_monitor(st, record_history, "health_monitor_collector_failing")

    assert not sick.ok and sick.failures == [f"collector:{plc_id}"]
    assert sick.alerts_sent == 1 and sick.restarted == [plc_id]
    assert st.ingest is not None
    ingest = st.ingest
    await wait_for("the restart", lambda: ingest.manager.restarts[plc_id] == 1, timeout_s=10)
    # The monitor's alert (the ingest's own collector alert reaches the on-duty too).
    alert = await pool.fetchval(
        "SELECT body FROM notifications WHERE recipient = $1 AND body LIKE $2",
        ON_DUTY,
        f"FactoryLM health%{plc_id}%",
    )
    assert "FactoryLM health: critical" in alert and "failing" in alert
    collector_alert = await wait_for(
        "the ingest's collector alert to the on-duty",
        lambda: pool.fetchval(
            "SELECT body FROM notifications WHERE recipient = $1 AND body LIKE $2",
            ON_DUTY,
            f"FactoryLM alert: PLC {plc_id} %",
        ),
        timeout_s=30,
    )
    assert "has failed 3 polls in a row" in collector_alert

    again = await run_monitor(st)  # still failing: the same incident, no second alert
    assert again.alerts_sent == 0 and again.restarted == []

    await sim.set_offline(False)
    await wait_for("the collector to recover", lambda: _is(pool, plc_id, "ok"), timeout_s=60)
    recovered = await run_monitor(st)
    assert recovered.ok
    closed = await pool.fetchval(
        "SELECT count(*) FROM health_incidents WHERE subject = $1 AND closed_at IS NOT NULL", plc_id
    )
    assert closed == 1


async def test_spool_alerts_once_each_when_filling_losing_or_stuck_and_clears(
    stack: tuple[Stack, SimulatedModbusPlc], pool: asyncpg.Pool, record_history: Any
) -> None:
    """An edge ingest's spool as it reports it (its row in ingest_writer_status): in use is an
    incident without a message; filling past 80 %, dropping samples and a backfill that does
    not move each alert once; a new ingest process's drops are new drops."""
    st, _ = stack
    host = f"edge-{uuid.uuid4().hex[:6]}"
    limits = SpoolLimits(ingest_hosts=[host], max_bytes=10_000)
    await pool.execute("INSERT INTO ingest_writer_status (host) VALUES ($1)", host)

    async def report(**columns: Any) -> None:
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=2))
        await pool.execute(
            f"UPDATE ingest_writer_status SET {sets}, updated_at = now() WHERE host = $1",
            host,
            *columns.values(),
        )

    async def alerts() -> list[str]:
        rows = await pool.fetch(
            "SELECT body FROM notifications WHERE recipient = $1 AND body LIKE $2 ORDER BY id",
            ON_DUTY,
            f"FactoryLM health%{host}%",
        )
        return [r["body"] for r in rows]

    def spool_failures(result: HealthRunResult) -> set[str]:
        return {f.split(":")[0] for f in result.failures if f.endswith(f":{host}")}

    await wait_for(
        "a healthy collector", lambda: _is(pool, st.plant.plcs[0].id, "ok"), timeout_s=30
    )
    empty = await run_monitor(st, spool=limits)
    assert spool_failures(empty) == set()
    assert empty.checks == 1 + 4 + 2 + 2 + 2  # 4 spool checks for the one ingest
    # From here on every alert is a spool incident's: the others (if any) are already open.

    oldest = datetime.now(UTC) - timedelta(minutes=3)
    await report(spool_samples=500, spool_bytes=5_000, spool_oldest=oldest, backfill_rate=0.0)
    in_use = await run_monitor(st, spool=limits)
    assert spool_failures(in_use) == {"spool"} and in_use.alerts_sent == 0

    await report(spool_bytes=9_000)
    full = await run_monitor(st, spool=limits)
    assert spool_failures(full) == {"spool", "spool_capacity"} and full.alerts_sent == 1
    assert f"spool_capacity {host}: at 90 % of its 10000 bytes" in (await alerts())[-1]

    await report(spool_dropped=1_200)
    losing = await run_monitor(st, record_history, "health_monitor_spool_losing", spool=limits)
    assert spool_failures(losing) == {"spool", "spool_capacity", "spool_loss"}
    assert losing.alerts_sent == 1
    assert "spool_loss" in (body := (await alerts())[-1]) and "1200 samples dropped" in body
    assert "spool_capacity" not in body  # that incident was already open and alerted

    same = await run_monitor(st, spool=limits)  # nothing new: no second alert
    assert spool_failures(same) == spool_failures(losing) and same.alerts_sent == 0

    # The oldest unsent sample has not moved since the second run, while the ingest writes its
    # status row (so it reaches the database): not progressing, past a threshold of 1 ms.
    stuck = await run_monitor(st, spool=limits.model_copy(update={"stall_after_s": 0.001}))
    assert "spool_backfill" in spool_failures(stuck) and stuck.alerts_sent == 1
    assert "not progressing" in (await alerts())[-1]

    # Backfilling again and below 80 %: those two close; the loss stays for its hour.
    await report(spool_samples=100, spool_bytes=1_000, spool_oldest=oldest + timedelta(minutes=2))
    moving = await run_monitor(st, spool=limits.model_copy(update={"stall_after_s": 0.001}))
    assert spool_failures(moving) == {"spool", "spool_loss"} and moving.alerts_sent == 0

    # The spool is drained, and the last drop is older than the hold: all clear.
    await report(spool_samples=0, spool_bytes=0, spool_oldest=None)
    clear = await run_monitor(st, spool=limits.model_copy(update={"loss_hold_s": 0.001}))
    assert spool_failures(clear) == set()
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM health_incidents WHERE subject = $1 AND closed_at IS NULL", host
        )
        == 0
    )

    # A restarted ingest counts from zero: 30 dropped by it are 30 new ones, not fewer than 1200.
    await report(spool_dropped=0)
    restarted = await run_monitor(st, spool=limits.model_copy(update={"loss_hold_s": 0.001}))
    assert spool_failures(restarted) == set()
    await report(spool_dropped=30)
    again = await run_monitor(st, spool=limits)
    assert spool_failures(again) == {"spool_loss"} and again.alerts_sent == 1
    assert "30 samples dropped" in (await alerts())[-1]
    assert len(await alerts()) == 4
    # This made-up ingest must not stand in the view of later monitors in this database (the
    # demo scenario's looks at every ingest that reported in the last day).
    await pool.execute("DELETE FROM ingest_writer_status WHERE host = $1", host)


async def _is(pool: asyncpg.Pool, plc_id: str, state: str) -> bool:
    return await collector_state(pool, plc_id) == state


async def test_daily_summary_counts_the_day(
    stack: tuple[Stack, SimulatedModbusPlc], pool: asyncpg.Pool, record_history: Any
) -> None:
    st, sim = stack
    await wait_for(
        "samples",
        lambda: pool.fetchval("SELECT count(*) FROM samples WHERE plc_id = $1", sim.plc.id),
    )
    handle = await st.client.start_workflow(
        DailySummaryWorkflow.run,
        DailySummaryInput(hours=24, recipients=[ON_DUTY]),
        id=f"daily-test-{uuid.uuid4().hex[:6]}",
        task_queue=st.settings.task_queue,
    )
    summary: DailySummary = await handle.result()
    await record_history(handle, "daily_summary")
    expected_events = await pool.fetchval(
        "SELECT count(*) FROM drift_events WHERE created_at >= $1", summary.since
    )
    assert summary.alerts_processed == expected_events
    assert summary.collector_uptime_pct > 0
    # This run's message (other tests' summaries share the database).
    body = await pool.fetchval(
        "SELECT body FROM notifications WHERE recipient = $1 AND workflow_id = $2 "
        "AND body LIKE 'FactoryLM daily summary%' ORDER BY id DESC LIMIT 1",
        ON_DUTY,
        handle.id,
    )
    assert "Work orders opened:" in body and "Collector uptime:" in body
