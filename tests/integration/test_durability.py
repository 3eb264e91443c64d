"""Durability on the real stack: the worker process is killed with SIGKILL at the worst
moments and restarted; every workflow still ends with exactly one PLC write and exactly one
work order. The PLC is a real Modbus peer that records every write request it receives."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from temporalio.client import Client, WorkflowHandle

from factorylm.models.approvals import ApprovalDecision
from factorylm.models.drift import DriftResponseResult
from factorylm.settings import Settings
from helpers import make_alert, plant_with_free_ports, until
from workflows.drift_response import DriftResponseWorkflow

APPROVER = "whatsapp:+15550300001"
MOTOR_RUN = 11


@dataclass
class RecordingPlc:
    """A Modbus peer that counts writes and can stall the next read-back of a register."""

    writes: list[tuple[int, list[int]]] = field(default_factory=list)
    stall_reads_of: int | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def action(self, function_code, start_address, address, count, current, set_values):  # type: ignore[no-untyped-def]
        if set_values is not None:
            self.writes.append((address, [int(v) for v in set_values]))
        elif self.stall_reads_of == address and self.writes:
            await self.release.wait()  # the read-back hangs while the worker is killed
        return None


class WorkerProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = env
        self._log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker", "--queue", "all"],
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@dataclass
class Rig:
    plc: RecordingPlc
    worker: WorkerProcess
    client: Client
    pool: asyncpg.Pool
    queue: str

    async def start(self, sigma: float) -> WorkflowHandle[Any, DriftResponseResult]:
        a = make_alert(sigma)
        return await self.client.start_workflow(
            DriftResponseWorkflow.run,
            a,
            id=f"{a.workflow_id}-{uuid.uuid4().hex[:6]}",
            task_queue=self.queue,
        )

    async def exactly_once(
        self, handle: WorkflowHandle[Any, DriftResponseResult]
    ) -> DriftResponseResult:
        result = await asyncio.wait_for(handle.result(), 90)
        writes = await self.pool.fetchval(
            "SELECT count(*) FROM plc_writes WHERE workflow_id = $1", handle.id
        )
        orders = await self.pool.fetchval(
            "SELECT count(*) FROM work_orders WHERE external_key LIKE $1", f"{handle.id}/%"
        )
        assert (writes, orders) == (1, 1)
        assert [w for w in self.plc.writes if w[0] == MOTOR_RUN] == [(MOTOR_RUN, [0])]
        return result


@pytest.fixture
async def rig(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> AsyncIterator[Rig]:
    plant, plant_file = plant_with_free_ports(tmp_path)
    plc_cfg = plant.plcs[0]
    plc = RecordingPlc()
    registers = [0] * 51
    registers[10], registers[11] = 1750, 1
    server = ModbusTcpServer(
        SimDevice(
            id=plc_cfg.device_id,
            action=plc.action,
            simdata=[SimData(0, values=registers, datatype=DataType.REGISTERS)],
        ),
        address=(plc_cfg.host, plc_cfg.port or 0),
    )
    await server.serve_forever(background=True)
    queue = f"dur-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "FACTORYLM_PG_DATABASE": settings.pg_database,
        "FACTORYLM_PG_PORT": str(settings.pg_port),
        "FACTORYLM_TEMPORAL_ADDRESS": settings.temporal_address,
        "FACTORYLM_TASK_QUEUE": queue,
        "FACTORYLM_PLC_TASK_QUEUE": f"{queue}-edge",
        "FACTORYLM_PLANT_FILE": str(plant_file),
        "FACTORYLM_APPROVERS": APPROVER,
        "FACTORYLM_APPROVAL_TIMEOUT_S": "120",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    yield Rig(plc, worker, client, pool, queue)
    worker.stop()
    plc.release.set()
    await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated


async def pending_request(rig: Rig, handle: WorkflowHandle[Any, Any]) -> str:
    row = await until(
        "the approval request",
        lambda: rig.pool.fetchrow(
            "SELECT code FROM approval_requests WHERE workflow_id = $1", handle.id
        ),
        timeout_s=60,
    )
    return str(row["code"])


async def test_kill_while_waiting_for_approval(rig: Rig) -> None:
    handle = await rig.start(6.0)
    code = await pending_request(rig, handle)
    rig.worker.kill()
    rig.worker.start()
    # The decision reaches the workflow through its new worker: history holds the wait.
    await handle.execute_update(
        DriftResponseWorkflow.decide, ApprovalDecision(approve=True, approver=APPROVER, code=code)
    )
    result = await rig.exactly_once(handle)
    assert result.status == "completed" and result.value_read_back == 0


async def test_kill_between_write_and_read_back(rig: Rig) -> None:
    rig.plc.stall_reads_of = MOTOR_RUN
    handle = await rig.start(6.0)
    code = await pending_request(rig, handle)
    await handle.execute_update(
        DriftResponseWorkflow.decide, ApprovalDecision(approve=True, approver=APPROVER, code=code)
    )
    await until(
        "the write to reach the PLC",
        lambda: any(a == MOTOR_RUN for a, _ in rig.plc.writes),
        timeout_s=60,
    )
    rig.worker.kill()  # the read-back is stalled: the write happened, its check did not
    rig.plc.release.set()
    rig.worker.start()
    result = await rig.exactly_once(handle)
    assert result.status == "completed" and result.value_written == result.value_read_back == 0
    audit = await rig.pool.fetchrow("SELECT * FROM plc_writes WHERE workflow_id = $1", handle.id)
    assert audit["status"] == "verified" and audit["value_before"] == 1


async def test_kill_while_opening_the_work_order(rig: Rig, settings: Settings) -> None:
    blocker = await asyncpg.connect(settings.pg_dsn)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE work_orders IN EXCLUSIVE MODE")
        handle = await rig.start(6.0)
        code = await pending_request(rig, handle)
        await handle.execute_update(
            DriftResponseWorkflow.decide,
            ApprovalDecision(approve=True, approver=APPROVER, code=code),
        )
        await until(
            "the work-order insert to wait on the lock",
            lambda: blocker.fetchval(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'work_orders'::regclass"
            ),
            timeout_s=60,
        )
        rig.worker.kill()
        rig.worker.start()
        await tx.rollback()  # the killed attempt's insert may still land: the retry must see it
    finally:
        await blocker.close()
    result = await rig.exactly_once(handle)
    assert result.status == "completed" and result.work_order_id is not None
