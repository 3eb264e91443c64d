"""A running API over the real stack (PostgreSQL, Temporal, a simulated Modbus PLC for the edge
worker), for the tests that attack it: tests/security/ and tests/integration/test_api.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from app.stack import Stack
from dev.simulator.modbus import SimulatedModbusPlc
from factorylm.api_tokens import Role, TokenStore
from factorylm.settings import Settings
from helpers import free_port, make_alert, plant_with_free_ports, until
from workflows.drift_response import DriftResponseWorkflow

APPROVER = "whatsapp:+15550100001"
BACKUP = "whatsapp:+15550100002"


@dataclass
class ApiRig:
    settings: Settings
    stack: Stack
    tokens: TokenStore

    @property
    def url(self) -> str:
        return self.settings.api_url

    def http(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)

    async def token(self, role: Role, approver: str | None = None) -> str:
        name = f"{role}-{uuid.uuid4().hex[:8]}"
        return await self.tokens.add(
            name, role, approver=approver, approvers=list(self.settings.approvers)
        )

    async def waiting_workflow(self) -> str:
        """A drift workflow waiting for the on-duty approver's decision."""
        handle = await self.stack.client.start_workflow(
            DriftResponseWorkflow.run,
            make_alert(5.0, metric="current"),
            id=f"api-{uuid.uuid4().hex[:8]}",
            task_queue=self.settings.task_queue,
        )
        await until(
            "the workflow to ask for approval",
            lambda: handle.query(DriftResponseWorkflow.pending_approval),
        )
        return handle.id

    async def pending_code(self, workflow_id: str) -> str:
        pending: Any = await self.stack.client.get_workflow_handle(workflow_id).query(
            DriftResponseWorkflow.pending_approval
        )
        return str(pending.code)


@asynccontextmanager
async def api_rig(
    tmp_path: Path, settings: Settings, client: Client, **overrides: Any
) -> AsyncIterator[ApiRig]:
    plant, _ = plant_with_free_ports(tmp_path)
    queue = f"api-{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(
        update={
            "task_queue": queue,
            "plc_task_queue": f"{queue}-edge",
            "api_port": free_port(),
            "approvers": [APPROVER, BACKUP],
            **overrides,
        }
    )
    sim = SimulatedModbusPlc(plant.plcs[0])
    await sim.start()
    stack = Stack(s, plant, client, run_ingest=False)
    await stack.start()
    assert stack.pool is not None
    try:
        yield ApiRig(s, stack, TokenStore(stack.pool))
    finally:
        await stack.stop()
        await sim.stop()
