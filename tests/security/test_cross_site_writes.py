"""Sites: a write for one site can never be executed by another site's edge worker.

Two sites, north and south, each with a pymodbus peer and a catalog action of the same name
(`close_valve`), each with its own approver. The real stack (app/stack.py) runs the agents
worker and one edge worker per site on the Temporal dev server; the attacker is a workflow of
its own that schedules `write_plc_setpoint` by name on the wrong site's queue.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from forgery import ForgedWriteWorkflow, refusal_of
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.worker import Worker

from app.stack import Stack
from dev.simulator.modbus import SimulatedModbusPlc
from dev.site_plant import ACTION, write_site_plant
from factorylm.models.approvals import ApprovalDecision, PendingApproval
from factorylm.models.drift import DriftResponseResult
from factorylm.models.plc_writes import PlcWriteInput
from factorylm.plant import Plant
from factorylm.settings import Settings
from helpers import free_port, make_alert, until
from ingest.alerts import WorkflowStarter
from workflows.drift_response import DriftResponseWorkflow

NORTH_APPROVER = "whatsapp:+15550107001"
SOUTH_APPROVER = "whatsapp:+15550107002"
APPROVERS = {"north": NORTH_APPROVER, "south": SOUTH_APPROVER}
VALVE_OPEN = 100.0


@dataclass
class Rig:
    settings: Settings
    plant: Plant
    sims: dict[str, SimulatedModbusPlc]  # by site: its tank-0
    client: Client
    pool: asyncpg.Pool
    attacker_queue: str

    async def valves(self) -> dict[str, float]:
        return {site: await sim.read("valve") for site, sim in self.sims.items()}


@pytest.fixture
async def rig(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> AsyncIterator[Rig]:
    plant, path = write_site_plant(
        tmp_path,
        {"north": [free_port()], "south": [free_port()]},
        site_options=lambda site: {"approvers": [APPROVERS[site]], "policy": "approval"},
    )
    queue = f"sites-{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(
        update={
            "task_queue": queue,
            "plc_task_queue": f"{queue}-edge",
            "approval_timeout_s": 60.0,
            # The deployment's own approvers: a site that names its own never asks these.
            "approvers": ["whatsapp:+15550107999"],
            "plant_file": path,
        }
    )
    sims = {s.name: SimulatedModbusPlc(s.plcs[0], seed=i) for i, s in enumerate(plant.sites)}
    for sim in sims.values():
        await sim.start()
        await sim._write("valve", VALVE_OPEN)
    stack = Stack(s, plant, client, run_ingest=False, run_api=False)
    await stack.start()
    attacker = Worker(client, task_queue=f"{queue}-attacker", workflows=[ForgedWriteWorkflow])
    try:
        async with attacker:
            yield Rig(s, plant, sims, client, pool, f"{queue}-attacker")
    finally:
        await stack.stop()
        for sim in sims.values():
            await sim.stop()


async def test_a_drift_is_answered_by_its_own_sites_approver_and_edge_only(rig: Rig) -> None:
    alert = make_alert(6.0, "pressure", "north-tank-0").model_copy(update={"site": "north"})
    started = await WorkflowStarter(rig.client, rig.settings.task_queue).deliver(alert)
    assert started.workflow_id == "drift-north-north-tank-0-pressure"
    handle = rig.client.get_workflow_handle(
        started.workflow_id, run_id=started.run_id, result_type=DriftResponseResult
    )
    try:
        described = await handle.describe()
        assert described.search_attributes["Site"] == ["north"]
        request: PendingApproval = await until(
            "north's approval request",
            lambda: handle.query(DriftResponseWorkflow.pending_approval),
            timeout_s=60.0,
        )
        assert request.action == ACTION and request.approvers == [NORTH_APPROVER]
        # South's approver holds a valid code in hand (say, read over a shoulder): refused.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                DriftResponseWorkflow.decide,
                ApprovalDecision(approve=True, approver=SOUTH_APPROVER, code=request.code),
            )
        assert "not an authorised approver" in str(refused.value.cause)
        await handle.execute_update(
            DriftResponseWorkflow.decide,
            ApprovalDecision(approve=True, approver=NORTH_APPROVER, code=request.code),
        )
        result = await handle.result()
    finally:
        with_result = await handle.describe()
        if with_result.status is not None and with_result.status.name == "RUNNING":
            await handle.terminate("test over")
    assert result.status == "completed" and result.value_read_back == 0
    assert await rig.valves() == {"north": 0.0, "south": VALVE_OPEN}
    audit = await rig.pool.fetchrow(
        "SELECT plc_id, status FROM plc_writes WHERE workflow_id = $1", started.workflow_id
    )
    assert (audit["plc_id"], audit["status"]) == ("north-tank-0", "verified")


async def test_a_write_for_one_site_on_another_sites_edge_queue_is_refused_and_audited(
    rig: Rig,
) -> None:
    workflow_id = f"forged-{uuid.uuid4().hex[:8]}"
    write = PlcWriteInput(
        action_id=f"{workflow_id}/close",
        workflow_id=workflow_id,
        action=ACTION,
        value=0,
        approved_by=NORTH_APPROVER,
        site="north",
    )
    refusal = await refusal_of(
        rig.client,
        write,
        edge_queue=rig.settings.edge_queue("south"),
        attacker_queue=rig.attacker_queue,
    )
    assert refusal.type == "WrongSite"
    assert refusal.message == f"this edge serves site south; {ACTION!r} is for site north"
    assert await rig.valves() == {"north": VALVE_OPEN, "south": VALVE_OPEN}
    audit = await rig.pool.fetchrow(
        "SELECT * FROM plc_writes WHERE action_id = $1", f"{workflow_id}/close"
    )
    assert audit["status"] == "refused" and audit["error"].startswith("WrongSite: ")
    assert audit["value_before"] is None and audit["value_read_back"] is None
