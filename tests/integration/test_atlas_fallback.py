"""When Atlas refuses a work order for good (licence, free tier), the work order is kept in the
built-in store, operations are told, and the drift summary says so; an Atlas work order is
served by the API. Real PostgreSQL and Temporal, the local Atlas at the HTTP boundary."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr
from temporalio.client import Client

from activities.cmms import CmmsActivities
from api_rig import APPROVER, ApiRig, api_rig
from dev.fakes.atlas import FREE_ACTIVE_WORK_ORDERS, FakeAtlas
from dev.fakes.server import LocalServer
from factorylm.api_tokens import Role
from factorylm.cmms.atlas import AtlasCmms
from factorylm.models.work_orders import OpenWorkOrderInput, WorkOrderPriority
from factorylm.settings import Settings

FREE_LIMIT_MESSAGE = (
    "You need a license to add a new work order. Free Limit of 30 incomplete work orders reached"
)


@pytest.fixture
async def atlas() -> AsyncIterator[tuple[FakeAtlas, str]]:
    fake = FakeAtlas()
    server = LocalServer(fake.app())
    await server.start()
    yield fake, server.url
    await server.stop()


def fill_free_tier(fake: FakeAtlas) -> None:
    for n in range(FREE_ACTIVE_WORK_ORDERS):
        fake.work_orders[5000 + n] = {"id": 5000 + n, "status": "OPEN", "description": "x"}


def order(key: str) -> OpenWorkOrderInput:
    return OpenWorkOrderInput(
        external_key=key,
        title="Bearing noise on conveyor-1",
        description="Vibration +4σ",
        priority=WorkOrderPriority.HIGH,
        asset_id="conveyor-1",
        due_date=date(2026, 11, 27),
    )


async def test_a_free_tier_refusal_is_kept_here_once_and_operations_are_told(
    pool: asyncpg.Pool, atlas: tuple[FakeAtlas, str]
) -> None:
    fake, url = atlas
    fill_free_tier(fake)
    store = AtlasCmms(pool, url, fake.email, fake.password)
    activities = CmmsActivities(pool, store=store)
    key = f"wf/{uuid.uuid4()}"
    try:
        ref = await activities.open_work_order(order(key))
        assert ref.system == "builtin" and ref.created and ref.id.startswith("WO-")
        assert ref.note is not None and FREE_LIMIT_MESSAGE in ref.note
        row = await pool.fetchrow("SELECT * FROM work_orders WHERE external_key = $1", key)
        assert (row["title"], row["asset_id"]) == ("Bearing noise on conveyor-1", "conveyor-1")
        assert FREE_LIMIT_MESSAGE in row["description"]
        (incident,) = await pool.fetch(
            "SELECT * FROM notifications WHERE dedup_key = $1", f"cmms-refused/{key}"
        )
        assert incident["recipient"] == "operations"
        assert FREE_LIMIT_MESSAGE in incident["body"] and ref.id in incident["body"]

        # A retry of the activity, even once Atlas has room again, never opens it twice.
        for wo in fake.work_orders.values():
            wo["status"] = "COMPLETE"
        again = await activities.open_work_order(order(key))
        assert (again.id, again.created, again.system) == (ref.id, False, "builtin")
        assert len(fake.work_orders) == FREE_ACTIVE_WORK_ORDERS
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM notifications WHERE dedup_key = $1", f"cmms-refused/{key}"
            )
            == 1
        )
        # A new work order goes to Atlas again.
        fresh = await activities.open_work_order(order(f"wf/{uuid.uuid4()}"))
        assert fresh.system == "atlas" and fresh.note is None
    finally:
        await store.close()


@pytest.fixture
async def rig(
    tmp_path: Path, settings: Settings, client: Client, atlas: tuple[FakeAtlas, str]
) -> AsyncIterator[ApiRig]:
    fake, url = atlas
    overrides: dict[str, Any] = {
        "cmms": "atlas",
        "atlas_url": url,
        "atlas_email": fake.email,
        "atlas_password": SecretStr(fake.password),
    }
    async with api_rig(tmp_path, settings, client, **overrides) as rig:
        yield rig


async def approved_drift(rig: ApiRig) -> dict[str, Any]:
    wf = await rig.waiting_workflow()
    code = await rig.pending_code(wf)
    token = await rig.token(Role.APPROVER, approver=APPROVER)
    async with rig.http(token) as http:
        ok = await http.post(f"/approvals/{wf}", json={"approve": True, "code": code})
        assert ok.status_code == 200
    result: dict[str, Any] = await rig.stack.client.get_workflow_handle(wf).result()
    return result


async def test_the_drift_summary_says_atlas_refused_and_the_api_serves_both_kinds(
    rig: ApiRig, atlas: tuple[FakeAtlas, str]
) -> None:
    fake, _ = atlas
    pool = rig.stack.pool
    assert pool is not None
    fill_free_tier(fake)
    refused = await approved_drift(rig)
    assert refused["work_order_id"].startswith("WO-")
    summary = await pool.fetchval(
        """SELECT body FROM notifications
           WHERE workflow_id = $1 AND recipient = $2 AND body LIKE '%Work order %'""",
        refused["workflow_id"],
        APPROVER,
    )
    assert f"Work order {refused['work_order_id']}. (kept in the built-in CMMS" in summary
    assert FREE_LIMIT_MESSAGE in summary
    incident = await pool.fetchval(
        "SELECT body FROM notifications WHERE workflow_id = $1 AND recipient = 'operations'",
        refused["workflow_id"],
    )
    assert incident.startswith("CMMS incident: Atlas refused it (free tier)")

    for wo in fake.work_orders.values():
        wo["status"] = "COMPLETE"
    kept = await approved_drift(rig)
    assert kept["work_order_id"].startswith("ATLAS-")
    remote = fake.work_orders[int(kept["work_order_id"].removeprefix("ATLAS-"))]

    viewer = await rig.token(Role.VIEWER)
    async with rig.http(viewer) as http:
        served = (await http.get(f"/work-orders/{kept['work_order_id']}")).json()
        builtin = (await http.get(f"/work-orders/{refused['work_order_id']}")).json()
        missing = await http.get("/work-orders/ATLAS-999999")
    assert served["system"] == "atlas" and served["asset_id"] == "conveyor-1"
    assert served["atlas"]["custom_id"] == remote["customId"]
    # The text as FactoryLM wrote it, not Atlas's escaped copy with the marker.
    assert remote["description"].startswith(served["description"].split("\n")[0])
    assert "[factorylm-" not in served["description"]
    assert (
        builtin["id"] == refused["work_order_id"] and FREE_LIMIT_MESSAGE in builtin["description"]
    )
    assert missing.status_code == 404
