"""The health monitor on the real stack: a PLC goes silent → one incident, one alert, one
collector restart in the ingest; it recovers → the incident closes. And the daily summary."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
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
    plant = Plant(name="health", plcs=[plc], actions=[])
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


async def run_monitor(stack: Stack, record: Any = None, name: str = "") -> HealthRunResult:
    s = stack.settings
    handle = await stack.client.start_workflow(
        HealthMonitorWorkflow.run,
        HealthMonitorInput(
            task_queues=[s.task_queue, s.plc_task_queue],
            schedule_ids=[BASELINE_SCHEDULE_ID, DAILY_SUMMARY_SCHEDULE_ID],
            recipients=[ON_DUTY],
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
