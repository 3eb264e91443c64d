"""The Starlette API over the real stack: health, and a decision through the approval endpoint
(who may decide is the token's business: tests/security/test_api_tokens.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client

from api_rig import APPROVER, ApiRig, api_rig
from factorylm.api_tokens import Role
from factorylm.settings import Settings


@pytest.fixture
async def rig(tmp_path: Path, settings: Settings, client: Client) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path, settings, client) as rig:
        yield rig


async def test_health_is_open_and_says_what_is_up(rig: ApiRig) -> None:
    async with rig.http() as http:
        response = await http.get("/health")
    assert response.json() == {"status": "ok", "database": "ok", "temporal": "ok"}


async def test_an_approver_token_with_the_code_approves_and_the_write_is_made(
    rig: ApiRig,
) -> None:
    wf = await rig.waiting_workflow()
    code = await rig.pending_code(wf)
    token = await rig.token(Role.APPROVER, approver=APPROVER)
    async with rig.http(token) as http:
        garbage = await http.post(
            f"/approvals/{wf}", content=b"{yes", headers={"content-type": "application/json"}
        )
        assert garbage.status_code == 400
        missing = await http.post(f"/approvals/{wf}", json={"code": code})
        assert missing.status_code == 422 and "approve" in missing.json()["error"]
        unknown = await http.post(
            "/approvals/drift-nowhere-nothing", json={"approve": True, "code": code}
        )
        assert unknown.status_code == 404
        ok = await http.post(f"/approvals/{wf}", json={"approve": True, "code": code})
        assert ok.status_code == 200 and ok.json()["decision"] == "approved"
        result = await rig.stack.client.get_workflow_handle(wf).result()
        assert result["status"] == "completed" and result["approved_by"] == APPROVER
        # The workflow has ended: a second decision finds nothing to decide.
        again = await http.post(f"/approvals/{wf}", json={"approve": True, "code": code})
        assert again.status_code == 404

    viewer = await rig.token(Role.VIEWER)
    async with rig.http(viewer) as http:
        wo = await http.get(f"/work-orders/{result['work_order_id']}")
        assert wo.status_code == 200 and wo.json()["asset_id"] == "conveyor-1"
        assert (await http.get("/work-orders/banana")).status_code == 400
        assert (await http.get("/work-orders/WO-999999")).status_code == 404
