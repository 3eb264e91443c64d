"""Finding 1, the workflow and edge half: whoever reaches Temporal must not be able to approve
without the request's code, nor get a PLC written by naming an approver.

Against the real stack: the Temporal dev server, PostgreSQL, the agents and edge workers
(app/stack.py) and a pymodbus peer. The attacker is a workflow of its own that schedules
`write_plc_setpoint` on the edge's task queue by name — what anyone with access to the
Temporal frontend can do — and gives it a configured approver's name.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from forgery import ForgedWriteWorkflow, refusal_of
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from app.stack import Stack
from dev.simulator.modbus import SimulatedModbusPlc
from factorylm.models.approvals import ApprovalDecision, PendingApproval
from factorylm.models.plc_writes import PlcWriteInput
from factorylm.settings import Settings
from helpers import make_alert, plant_with_free_ports, until
from workflows.drift_response import DriftResponseWorkflow

APPROVER = "whatsapp:+15550100001"
BACKUP = "whatsapp:+15550100002"


@dataclass
class Rig:
    settings: Settings
    sim: SimulatedModbusPlc
    client: Client
    pool: asyncpg.Pool
    attacker_queue: str
    edge_queue: str  # the demo plant's one site's


@pytest.fixture
async def rig(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> AsyncIterator[Rig]:
    plant, _ = plant_with_free_ports(tmp_path)
    queue = f"sec-edge-{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(
        update={
            "task_queue": queue,
            "plc_task_queue": f"{queue}-edge",
            "approval_timeout_s": 30.0,
            "approvers": [APPROVER, BACKUP],
        }
    )
    sim = SimulatedModbusPlc(plant.plcs[0], seed=5)
    await sim.start()
    stack = Stack(s, plant, client, run_ingest=False, run_api=False)
    await stack.start()
    attacker = Worker(client, task_queue=f"{queue}-attacker", workflows=[ForgedWriteWorkflow])
    async with attacker:
        yield Rig(s, sim, client, pool, f"{queue}-attacker", s.edge_queue(plant.sites[0].name))
    await stack.stop()
    await sim.stop()


async def pending(handle: Any) -> PendingApproval:
    request: PendingApproval = await until(
        "an approval request", lambda: handle.query(DriftResponseWorkflow.pending_approval)
    )
    return request


async def forge(rig: Rig, workflow_id: str, action_id: str) -> ApplicationError:
    """Schedule a shutdown on the edge queue as `workflow_id`, naming the on-duty approver;
    returns the edge's refusal."""
    write = PlcWriteInput(
        action_id=action_id,
        workflow_id=workflow_id,
        action="shutdown_motor",
        value=0,
        approved_by=APPROVER,
    )
    return await refusal_of(
        rig.client, write, edge_queue=rig.edge_queue, attacker_queue=rig.attacker_queue
    )


async def test_decide_without_the_request_code_is_refused(rig: Rig) -> None:
    handle = await rig.client.start_workflow(
        DriftResponseWorkflow.run,
        make_alert(6.0),
        id=f"drift-sec-nocode-{uuid.uuid4().hex[:6]}",
        task_queue=rig.settings.task_queue,
    )
    request = await pending(handle)
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await handle.execute_update(
            DriftResponseWorkflow.decide, ApprovalDecision(approve=True, approver=APPROVER)
        )
    assert "code" in str(err.value.cause)
    # Still waiting for a real answer: the codeless decision changed nothing.
    still = await handle.query(DriftResponseWorkflow.pending_approval)
    assert still is not None and still.code == request.code
    await handle.execute_update(
        DriftResponseWorkflow.decide,
        ApprovalDecision(approve=False, approver=APPROVER, code=request.code),
    )
    result = await handle.result()
    assert result.status == "denied" and result.value_written is None
    assert await rig.sim.read("motor_run") == 1


async def test_a_write_naming_an_approver_without_an_approval_on_record_is_refused_and_audited(
    rig: Rig,
) -> None:
    workflow_id = f"forged-{uuid.uuid4().hex[:8]}"
    refusal = await forge(rig, workflow_id, f"{workflow_id}/shutdown")
    assert refusal.type == "ApprovalMissing" and "no approval" in refusal.message
    assert await rig.sim.read("motor_run") == 1  # the motor still runs
    audit = await rig.pool.fetchrow(
        "SELECT * FROM plc_writes WHERE action_id = $1", f"{workflow_id}/shutdown"
    )
    assert audit["status"] == "refused" and audit["approved_by"] == APPROVER
    assert "ApprovalMissing" in audit["error"]
    assert audit["value_before"] is None and audit["value_read_back"] is None


async def test_an_approval_recorded_for_another_run_does_not_authorise_a_write(rig: Rig) -> None:
    # A genuine episode: asked, approved with the code, written, recorded.
    handle = await rig.client.start_workflow(
        DriftResponseWorkflow.run,
        make_alert(6.0),
        id=f"drift-sec-replay-{uuid.uuid4().hex[:6]}",
        task_queue=rig.settings.task_queue,
    )
    request = await pending(handle)
    await handle.execute_update(
        DriftResponseWorkflow.decide,
        ApprovalDecision(approve=True, approver=APPROVER, code=request.code),
    )
    result = await handle.result()
    assert result.status == "completed" and await rig.sim.read("motor_run") == 0
    approved = await rig.pool.fetchval(
        "SELECT count(*) FROM approval_requests WHERE workflow_id = $1 AND status = 'approved'"
        " AND answered_by = $2",
        handle.id,
        APPROVER,
    )
    assert approved == 1
    await rig.sim._write("motor_run", 1)  # the machine was restarted after the fix

    # The intruder reuses the closed workflow's id (a new run) to borrow its approval.
    refusal = await forge(rig, handle.id, f"{handle.id}/forged/shutdown_motor")
    assert refusal.type == "ApprovalMissing"
    assert await rig.sim.read("motor_run") == 1
    audit = await rig.pool.fetchrow(
        "SELECT status FROM plc_writes WHERE action_id = $1", f"{handle.id}/forged/shutdown_motor"
    )
    assert audit["status"] == "refused"
