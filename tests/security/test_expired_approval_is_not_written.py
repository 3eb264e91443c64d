"""Finding 7: an approved write runs within the approval's validity or not at all, and a retry
never rewrites a value someone else has changed since the first attempt.

Against the real stack: the Temporal dev server, PostgreSQL, the agents worker, the edge
worker started (or not) as the test says, and a Modbus peer (pymodbus's server).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from temporalio.client import Client, WorkflowHandle

from app.stack import Stack
from dev.simulator.modbus import SimulatedModbusPlc
from factorylm.models.approvals import ApprovalDecision, PendingApproval
from factorylm.models.drift import DriftResponseResult
from factorylm.plant import Plant
from factorylm.settings import Settings
from helpers import make_alert, plant_with_free_ports, until
from workers import plc_edge
from workflows.drift_response import DriftResponseWorkflow

APPROVER = "whatsapp:+15550100001"
SPEED, RUN = 10, 11  # conveyor-1's setpoint registers


@dataclass
class Rig:
    settings: Settings
    plant: Plant
    client: Client
    pool: asyncpg.Pool


def rig_settings(settings: Settings, **extra: Any) -> Settings:
    queue = f"sec-expiry-{uuid.uuid4().hex[:8]}"
    return settings.model_copy(
        update={
            "task_queue": queue,
            "plc_task_queue": f"{queue}-edge",
            "approval_timeout_s": 30.0,
            "approvers": [APPROVER],
            **extra,
        }
    )


async def start(rig: Rig, sigma: float) -> WorkflowHandle[Any, DriftResponseResult]:
    return await rig.client.start_workflow(
        DriftResponseWorkflow.run,
        make_alert(sigma),
        id=f"drift-sec-expiry-{uuid.uuid4().hex[:6]}",
        task_queue=rig.settings.task_queue,
    )


async def outcome(handle: WorkflowHandle[Any, DriftResponseResult]) -> DriftResponseResult:
    """The workflow's result; a test failure, not a hang, if it never ends."""
    try:
        return await asyncio.wait_for(handle.result(), 60)
    except TimeoutError:
        raise AssertionError(f"{handle.id} did not finish in 60 s") from None


async def approve(handle: WorkflowHandle[Any, Any]) -> None:
    request: PendingApproval = await until(
        "an approval request", lambda: handle.query(DriftResponseWorkflow.pending_approval)
    )
    await handle.execute_update(
        DriftResponseWorkflow.decide,
        ApprovalDecision(approve=True, approver=APPROVER, code=request.code),
    )


@pytest.fixture
async def no_edge(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> AsyncIterator[tuple[Rig, SimulatedModbusPlc]]:
    """Agents worker up, edge worker down (its machine is off, its network cut)."""
    plant, _ = plant_with_free_ports(tmp_path)
    s = rig_settings(settings, approval_validity_s=2.0)
    sim = SimulatedModbusPlc(plant.plcs[0], seed=7)
    await sim.start()
    stack = Stack(s, plant, client, run_edge_worker=False, run_ingest=False, run_api=False)
    await stack.start()
    yield Rig(s, plant, client, pool), sim
    await stack.stop()
    await sim.stop()


async def test_an_approved_write_not_run_within_its_validity_is_never_run(
    no_edge: tuple[Rig, SimulatedModbusPlc],
) -> None:
    rig, sim = no_edge
    handle = await start(rig, 6.0)
    await approve(handle)
    result = await outcome(handle)  # the write's schedule-to-close window (2 s) runs out
    assert result.status == "approval_expired" and result.value_written is None
    description = await rig.pool.fetchval(
        "SELECT description FROM work_orders WHERE external_key LIKE $1", f"{handle.id}/%"
    )
    assert "Not written" in description and "approval expired" in description

    # The edge worker comes back. It gets on with new work, and the expired shutdown is not
    # among it: an automatic speed reduction from another episode goes through first...
    edge, writes = plc_edge.build_worker(rig.client, rig.pool, rig.plant, rig.settings)
    try:
        async with edge:
            later = await start(rig, 2.5)
            done = await outcome(later)
            assert done.status == "completed" and await sim.read("speed_setpoint") == 1050
    finally:
        await writes.close()
    # ...and the motor was never stopped.
    assert await sim.read("motor_run") == 1
    assert (
        await rig.pool.fetchval("SELECT count(*) FROM plc_writes WHERE workflow_id = $1", handle.id)
        == 0
    )


async def test_the_edge_refuses_an_approval_older_than_its_validity(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    plant, _ = plant_with_free_ports(tmp_path)
    s = rig_settings(settings)  # 10 minutes, the default
    sim = SimulatedModbusPlc(plant.plcs[0], seed=8)
    await sim.start()
    stack = Stack(s, plant, client, run_edge_worker=False, run_ingest=False, run_api=False)
    await stack.start()
    rig = Rig(s, plant, client, pool)
    try:
        handle = await start(rig, 6.0)
        await approve(handle)
        await until(
            "the approval on record",
            lambda: pool.fetchval(
                "SELECT 1 FROM approval_requests WHERE workflow_id = $1 AND status = 'approved'",
                handle.id,
            ),
        )
        # Eleven minutes pass, as far as the record goes, before the edge sees the write.
        await pool.execute(
            "UPDATE approval_requests SET answered_at = answered_at - interval '11 minutes'"
            " WHERE workflow_id = $1",
            handle.id,
        )
        edge, writes = plc_edge.build_worker(client, pool, plant, s)
        try:
            async with edge:
                result = await outcome(handle)
        finally:
            await writes.close()
    finally:
        await stack.stop()
        await sim.stop()
    assert result.status == "approval_expired" and result.value_written is None
    assert await sim.read("motor_run") == 1
    audit = await pool.fetchrow("SELECT * FROM plc_writes WHERE workflow_id = $1", handle.id)
    assert audit["status"] == "refused" and "ApprovalExpired" in audit["error"]
    assert audit["value_read_back"] is None


async def test_a_retry_that_finds_the_value_changed_by_someone_else_stops_without_rewriting(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    plant, _ = plant_with_free_ports(tmp_path)
    plc = plant.plcs[0]
    write_requests: list[tuple[int, list[int]]] = []

    async def plc_program(function_code, start_address, address, count, current, set_values):  # type: ignore[no-untyped-def]
        if set_values is None or address != SPEED:
            return None
        write_requests.append((address, [int(v) for v in set_values]))
        if len(write_requests) == 1:
            # The first write attempt fails; meanwhile an operator sets the speed by hand.
            current[SPEED - start_address] = 1500
            return ExcCodes.DEVICE_FAILURE
        return None

    registers = [0] * 51
    registers[SPEED], registers[RUN] = 1750, 1
    server = ModbusTcpServer(
        SimDevice(
            id=plc.device_id,
            action=plc_program,
            simdata=[SimData(0, values=registers, datatype=DataType.REGISTERS)],
        ),
        address=(plc.host, plc.port or 0),
    )
    await server.serve_forever(background=True)
    s = rig_settings(settings)
    stack = Stack(s, plant, client, run_ingest=False, run_api=False)
    await stack.start()
    try:
        handle = await start(Rig(s, plant, client, pool), 2.5)  # an automatic speed reduction
        result = await outcome(handle)
    finally:
        await stack.stop()
        await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated
    assert result.status == "write_failed:PlcValueChanged" and result.value_written is None
    assert write_requests == [(SPEED, [1050])]  # the failed attempt only: nothing rewritten
    audit = await pool.fetchrow("SELECT * FROM plc_writes WHERE workflow_id = $1", handle.id)
    assert audit["status"] == "failed" and audit["value_before"] == 1750
    assert "someone else" in audit["error"] and "1500" in audit["error"]
    incident = await pool.fetchval(
        "SELECT body FROM notifications WHERE dedup_key = $1", f"incident/{audit['action_id']}"
    )
    assert "1500" in incident
