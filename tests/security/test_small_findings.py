"""Finding 13: /health (unauthenticated) returned raw database and Temporal errors, odd work
order ids gave 500, log lines carried unescaped user strings, and a photo upload's reply_to
could name an approver, whose next free text was then taken as the photo's answer."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from temporalio.client import Client

from api.app import create_app
from api_rig import APPROVER, ApiRig, api_rig
from factorylm.api_tokens import Role
from factorylm.db.pool import create_pool
from factorylm.settings import Settings
from whatsapp_rig import Rig, rig

__all__ = ["rig"]  # the WhatsApp fixture


@pytest.fixture
async def api(tmp_path: Path, settings: Settings, client: Client) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path, settings, client) as api:
        yield api


async def test_health_says_what_is_down_but_never_why(settings: Settings, client: Client) -> None:
    pool = await create_pool(settings, max_size=1)
    app = create_app(settings, client, pool)
    await pool.close()  # the database is gone from the API's point of view
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        response = await http.get("/health")
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "database": "unreachable", "temporal": "ok"}


@pytest.mark.parametrize(
    ("wo_id", "status"),
    [
        ("WO-²", 400),  # str.isdigit() says yes, int() says no
        ("²", 400),
        ("WO-١٢٣", 400),  # Arabic-Indic digits: not an id either
        ("WO-99999999999999999999", 400),  # past int64
        ("WO-9223372036854775807", 400),  # 19 digits: refused before the database
        ("WO-999999999999999999", 404),  # 18 digits: a valid id nobody has
    ],
)
async def test_odd_work_order_ids_are_a_clear_4xx(api: ApiRig, wo_id: str, status: int) -> None:
    token = await api.token(Role.VIEWER)
    async with api.http(token) as http:
        response = await http.get(f"/work-orders/{wo_id}")
    assert response.status_code == status, response.text


async def test_a_photo_upload_cannot_make_an_approver_the_one_asked(api: ApiRig) -> None:
    token = await api.token(Role.UPLOADER)
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 30, 200)).save(out, "PNG")
    async with api.http(token) as http:
        response = await http.post(
            "/photos",
            files={"image": ("p.png", out.getvalue(), "image/png")},
            data={"reply_to": APPROVER},
        )
    assert response.status_code == 422 and "approver" in response.json()["error"]
    assert api.stack.pool is not None
    assert (
        await api.stack.pool.fetchval("SELECT count(*) FROM photos WHERE sender = $1", APPROVER)
        == 0
    )


async def test_user_text_reaches_the_log_escaped(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    forged = "whatsapp:+1999\n2026-12-01 INFO api.whatsapp: whatsapp:+15550100001 approved"
    with caplog.at_level(logging.INFO):
        await rig.reply(forged, "hello")
    lines = [r.getMessage() for r in caplog.records if "unauthorised" in r.getMessage()]
    assert lines and all("\n" not in line for line in lines)


async def test_a_non_finite_baseline_is_shown_as_null_not_a_500(api: ApiRig) -> None:
    assert api.stack.pool is not None
    plc = f"nan-plc-{uuid.uuid4().hex[:6]}"
    await api.stack.pool.execute(
        """INSERT INTO baselines (run_key, plc_id, metric, mean, std, p95, p99, sample_count,
                                  window_start, window_end)
           VALUES ('test-nan', $1, 'vibration', 'NaN', 'Infinity', 1, 2, 10, now(), now())""",
        plc,
    )
    try:
        token = await api.token(Role.VIEWER)
        async with api.http(token) as http:
            response = await http.get("/baselines")
        assert response.status_code == 200
        row = next(b for b in response.json()["baselines"] if b["plc_id"] == plc)
        assert row["mean"] is None and row["std"] is None and row["p95"] == 1
    finally:
        await api.stack.pool.execute("DELETE FROM baselines WHERE plc_id = $1", plc)
