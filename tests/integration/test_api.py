"""The Starlette API over the real stack: authentication, authorisation, decisions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from app.stack import Stack
from dev.simulator.modbus import SimulatedModbusPlc
from factorylm.settings import Settings
from helpers import free_port, make_alert, plant_with_free_ports, until
from workflows.drift_response import DriftResponseWorkflow

APPROVER = "whatsapp:+15550100001"


@pytest.fixture
async def api(
    tmp_path: Path, settings: Settings, client: Client
) -> AsyncIterator[tuple[httpx.AsyncClient, Stack]]:
    plant, _ = plant_with_free_ports(tmp_path)
    queue = f"api-{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(
        update={
            "task_queue": queue,
            "plc_task_queue": f"{queue}-edge",
            "api_port": free_port(),
            "approvers": [APPROVER],
        }
    )
    sim = SimulatedModbusPlc(plant.plcs[0])
    await sim.start()
    stack = Stack(s, plant, client, run_ingest=False)
    await stack.start()
    headers = {"Authorization": f"Bearer {s.api_token}"}
    async with httpx.AsyncClient(base_url=s.api_url, headers=headers, timeout=10) as http:
        yield http, stack
    await stack.stop()
    await sim.stop()


async def waiting_workflow(stack: Stack) -> str:
    alert = make_alert(5.0, metric="current")
    handle = await stack.client.start_workflow(
        DriftResponseWorkflow.run,
        alert,
        id=f"api-{uuid.uuid4().hex[:8]}",
        task_queue=stack.settings.task_queue,
    )
    await until(
        "the workflow to ask for approval",
        lambda: handle.query(DriftResponseWorkflow.pending_approval),
    )
    return handle.id


async def test_health(api: tuple[httpx.AsyncClient, Stack]) -> None:
    http, _ = api
    response = await http.get("/health")
    assert response.json() == {"status": "ok", "database": "ok", "temporal": "ok"}


async def test_approval_endpoint_checks_who_and_what(api: tuple[httpx.AsyncClient, Stack]) -> None:
    http, stack = api
    wf = await waiting_workflow(stack)
    body = {"approve": True, "approver": APPROVER}
    no_token = await http.post(f"/approvals/{wf}", json=body, headers={"Authorization": "Bearer x"})
    assert no_token.status_code == 401
    stranger = await http.post(f"/approvals/{wf}", json={**body, "approver": "whatsapp:+1999"})
    assert stranger.status_code == 403 and "not an authorised approver" in stranger.json()["error"]
    garbage = await http.post(
        f"/approvals/{wf}", content=b"{yes", headers={"content-type": "application/json"}
    )
    assert garbage.status_code == 400
    missing = await http.post(f"/approvals/{wf}", json={"approver": APPROVER})
    assert missing.status_code == 422 and "approve" in missing.json()["error"]
    unknown = await http.post("/approvals/drift-nowhere-nothing", json=body)
    assert unknown.status_code == 404
    ok = await http.post(f"/approvals/{wf}", json=body)
    assert ok.status_code == 200 and ok.json()["decision"] == "approved"
    again = await http.post(f"/approvals/{wf}", json=body)
    assert again.status_code in (404, 409)  # no request pending any more (or already closed)
    result = await stack.client.get_workflow_handle(wf).result()
    assert result["status"] == "completed" and result["approved_by"] == APPROVER

    wo = await http.get(f"/work-orders/{result['work_order_id']}")
    assert wo.status_code == 200 and wo.json()["asset_id"] == "conveyor-1"
    assert (await http.get("/work-orders/banana")).status_code == 400
    assert (await http.get("/work-orders/WO-999999")).status_code == 404
