"""DriftResponseWorkflow on the real Temporal server, real Postgres and a real Modbus peer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError

from app.stack import Stack
from dev.simulator.modbus import SimulatedModbusPlc
from factorylm.models.approvals import ApprovalDecision, PendingApproval
from factorylm.models.drift import DriftAlert, DriftResponseResult
from factorylm.plant import Plant
from factorylm.settings import Settings
from helpers import make_alert as alert
from helpers import plant_with_free_ports, until
from ingest.alerts import WorkflowStarter
from workflows.drift_response import DriftResponseWorkflow

APPROVER = "whatsapp:+15550100001"
BACKUP = "whatsapp:+15550100002"


@dataclass
class Rig:
    settings: Settings
    plant: Plant
    sim: SimulatedModbusPlc
    client: Client
    pool: asyncpg.Pool


@pytest.fixture
async def rig(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> AsyncIterator[Rig]:
    plant, _ = plant_with_free_ports(tmp_path)
    queue = f"wf-test-{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(
        update={
            "task_queue": queue,
            "plc_task_queue": f"{queue}-edge",
            "approval_timeout_s": 4.0,
            "approvers": [APPROVER, BACKUP],
        }
    )
    sim = SimulatedModbusPlc(plant.plcs[0], seed=1)
    await sim.start()
    stack = Stack(s, plant, client, run_ingest=False, run_api=False)
    await stack.start()
    yield Rig(s, plant, sim, client, pool)
    await stack.stop()
    await sim.stop()


async def start(rig: Rig, a: DriftAlert) -> WorkflowHandle[Any, DriftResponseResult]:
    return await rig.client.start_workflow(
        DriftResponseWorkflow.run,
        a,
        id=f"{a.workflow_id}-{uuid.uuid4().hex[:6]}",
        task_queue=rig.settings.task_queue,
    )


async def wait_rows(pool: asyncpg.Pool, query: str, *args: object) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await until(f"rows for {query}", lambda: pool.fetch(query, *args))
    return rows


async def pending(handle: WorkflowHandle[Any, Any]) -> PendingApproval:
    request: PendingApproval = await until(
        "an approval request", lambda: handle.query(DriftResponseWorkflow.pending_approval)
    )
    return request


async def test_approved_shutdown_writes_verifies_and_opens_a_work_order(rig: Rig) -> None:
    handle = await start(rig, alert(6.0))
    request = await pending(handle)
    assert request.action == "shutdown_motor" and len(request.code) == 4
    asked = await wait_rows(
        rig.pool, "SELECT recipient FROM approval_requests WHERE workflow_id = $1", handle.id
    )
    assert [r["recipient"] for r in asked] == [APPROVER]  # the on-duty approver first
    outcome = await handle.execute_update(
        DriftResponseWorkflow.decide,
        ApprovalDecision(approve=True, approver=APPROVER, code=request.code),
    )
    assert outcome == "approved"
    result = await handle.result()
    assert result.status == "completed" and result.approved_by == APPROVER
    assert result.value_written == result.value_read_back == 0
    assert await rig.sim.read("motor_run") == 0
    audit = await rig.pool.fetchrow("SELECT * FROM plc_writes WHERE workflow_id = $1", handle.id)
    assert (
        audit["approved_by"] == APPROVER
        and audit["value_before"] == 1
        and audit["status"] == "verified"
    )
    wo = await rig.pool.fetchrow(
        "SELECT * FROM work_orders WHERE asset_id = 'conveyor-1' AND external_key LIKE $1",
        f"{handle.id}/%",
    )
    assert f"WO-{wo['id']:06d}" == result.work_order_id
    assert wo["priority"] == "HIGH" and "approved by " + APPROVER in wo["description"]


async def test_bad_decisions_are_rejected_and_a_duplicate_has_no_effect(
    rig: Rig, record_history: Any
) -> None:
    handle = await start(rig, alert(5.0))
    request = await pending(handle)
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(
            DriftResponseWorkflow.decide,
            ApprovalDecision(approve=True, approver="whatsapp:+19990000000"),
        )
    assert "not an authorised approver" in str(err.value.cause)
    wrong = "0000" if request.code != "0000" else "1111"
    with pytest.raises(WorkflowUpdateFailedError) as mismatch:
        await handle.execute_update(
            DriftResponseWorkflow.decide,
            ApprovalDecision(approve=True, approver=APPROVER, code=wrong),
        )
    assert "does not match the pending request" in str(mismatch.value.cause)
    assert (
        await handle.execute_update(
            DriftResponseWorkflow.decide,
            ApprovalDecision(approve=False, approver=APPROVER, code=request.code),
        )
        == "denied"
    )
    with pytest.raises(WorkflowUpdateFailedError) as dup:
        await handle.execute_update(
            DriftResponseWorkflow.decide, ApprovalDecision(approve=True, approver=APPROVER)
        )
    assert "no approval is pending" in str(dup.value.cause)
    result = await handle.result()
    await record_history(handle, "drift_response_denied")
    assert result.status == "denied" and result.value_written is None
    assert (
        await rig.pool.fetchval("SELECT count(*) FROM plc_writes WHERE workflow_id = $1", handle.id)
        == 0
    )
    assert await rig.sim.read("motor_run") == 1


async def test_no_answer_escalates_once_then_means_no_write(rig: Rig) -> None:
    handle = await start(rig, alert(7.0))
    await pending(handle)
    result = await handle.result()
    asked = await rig.pool.fetch(
        "SELECT recipient, status FROM approval_requests WHERE workflow_id = $1 ORDER BY id",
        handle.id,
    )
    assert [(r["recipient"], r["status"]) for r in asked] == [
        (APPROVER, "expired"),
        (BACKUP, "expired"),
    ]
    assert result.status == "not_approved_in_time" and result.value_written is None
    assert (
        await rig.pool.fetchval("SELECT count(*) FROM plc_writes WHERE workflow_id = $1", handle.id)
        == 0
    )
    assert await rig.sim.read("motor_run") == 1
    description = await rig.pool.fetchval(
        "SELECT description FROM work_orders WHERE external_key LIKE $1", f"{handle.id}/%"
    )
    assert "Not approved in time" in description and "No PLC write was made" in description


async def test_auto_action_runs_without_approval(rig: Rig) -> None:
    handle = await start(rig, alert(2.5))
    result = await handle.result()
    assert (result.action, result.policy, result.status) == (
        "reduce_motor_speed_to_60pct",
        "auto",
        "completed",
    )
    assert result.approved_by is None and result.value_read_back == 1050
    assert await rig.sim.read("speed_setpoint") == 1050


async def test_a_drift_storm_is_one_workflow_and_more_alarms_are_evidence(rig: Rig) -> None:
    starter = WorkflowStarter(rig.client, rig.settings.task_queue, coalesce_s=0.5)
    storm = alert(6.0, metric="motor_temp")
    await asyncio.gather(*(starter.start(storm) for _ in range(20)))
    # One start, and the 19 alarms that came while it was recent as one evidence signal.
    assert starter.triggers == 20 and starter.calls == 2
    later = alert(9.0, metric="motor_temp")
    await starter.start(later)
    await starter.drain()
    assert starter.calls == 3 and starter.calls_saved == 18
    assert len({s.run_id for s in starter.started}) == 1
    handle = rig.client.get_workflow_handle(storm.workflow_id)
    desc = await handle.describe()
    assert desc.search_attributes["PlcId"] == ["conveyor-1"]
    assert desc.search_attributes["Metric"] == ["motor_temp"]

    # The peak of the evidence sets the severity the Web UI filters on.
    async def critical() -> bool:
        described = await handle.describe()
        return described.search_attributes.get("Severity") == ["critical"]

    await until("the Severity search attribute to read critical", critical)
    history = await handle.fetch_history()
    signals = [
        e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert len(signals) == 3
    await handle.terminate("test done")
