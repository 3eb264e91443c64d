"""Photo intake end to end: real image files, the real API, PostgreSQL and Temporal; Gemini,
Claude and Twilio are local servers speaking their documented APIs to the official clients."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from photo_samples import jpeg_bytes, png_bytes
from pydantic import SecretStr
from temporalio.client import Client

from api.photo_intake import photo_workflow_id
from app.stack import Stack
from dev.fakes.anthropic import fake_anthropic
from dev.fakes.gemini import fake_gemini
from dev.fakes.scripted import Reply, Script
from dev.fakes.server import LocalServer
from dev.fakes.twilio import FakeTwilio, post_inbound
from factorylm.models.photos import PhotoIntakeResult
from factorylm.settings import Settings, reveal
from factorylm.waiting import wait_for
from helpers import free_port, plant_with_free_ports

TECH = "whatsapp:+15550300001"
MAX_BYTES = 256 * 1024


def finding(**overrides: Any) -> dict[str, Any]:
    return {
        "equipment_type": "centrifugal pump",
        "visible_issue": "water leaking at the mechanical seal",
        "severity": "high",
        "suggested_work": "replace the mechanical seal; check shaft alignment",
        "confidence": 0.86,
        "asset_tag_text": None,
        **overrides,
    }


@dataclass
class PhotoRig:
    settings: Settings
    stack: Stack
    twilio: FakeTwilio
    twilio_url: str
    gemini: Script
    claude: Script
    pool: asyncpg.Pool

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {reveal(self.settings.api_token)}"}

    async def upload(
        self, data: bytes, filename: str = "photo.jpg", token: str | None = None, **fields: str
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or reveal(self.settings.api_token)}"}
        async with httpx.AsyncClient(base_url=self.settings.api_url, timeout=30) as http:
            return await http.post(
                "/photos",
                files={"image": (filename, data, "application/octet-stream")},
                data=fields,
                headers=headers,
            )

    async def result(self, photo_id: str) -> PhotoIntakeResult:
        handle = self.stack.client.get_workflow_handle(
            photo_workflow_id(photo_id), result_type=PhotoIntakeResult
        )
        result: PhotoIntakeResult = await handle.result()
        return result

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.settings.api_url, timeout=10) as http:
            return await http.get(path, headers=self.auth)


@contextlib.asynccontextmanager
async def photo_rig(
    tmp_path: Path,
    settings: Settings,
    client: Client,
    pool: asyncpg.Pool,
    *,
    keys: bool = True,
    **overrides: Any,
) -> AsyncIterator[PhotoRig]:
    twilio = FakeTwilio()
    twilio_server = LocalServer(twilio.app())
    gemini, claude = Script(), Script()
    gemini_server, claude_server = fake_gemini(gemini), fake_anthropic(claude)
    for server in (twilio_server, gemini_server, claude_server):
        await server.start()
    plant, _ = plant_with_free_ports(tmp_path)
    queue = f"photo-{uuid.uuid4().hex[:8]}"
    port = free_port()
    update: dict[str, Any] = {
        "task_queue": queue,
        "plc_task_queue": f"{queue}-edge",
        "approvers": [TECH],
        "api_port": port,
        "public_url": f"http://127.0.0.1:{port}",
        "twilio_account_sid": twilio.account_sid,
        "twilio_auth_token": SecretStr(twilio.auth_token),
        "twilio_api_base_url": twilio_server.url,
        "photo_dir": tmp_path / "photos",
        "photo_max_bytes": MAX_BYTES,
        "photo_asset_wait_s": 60.0,
        "anthropic_api_key": None,
        "gemini_api_key": None,
    }
    if keys:
        update |= {
            "gemini_api_key": "gemini-test-key",
            "gemini_base_url": gemini_server.url,
            "anthropic_api_key": "sk-ant-test",
            "anthropic_base_url": claude_server.url,
        }
    s = Settings.model_validate({**settings.model_dump(), **update, **overrides})
    stack = Stack(s, plant, client, run_ingest=False, run_edge_worker=False)
    await stack.start()
    try:
        yield PhotoRig(s, stack, twilio, twilio_server.url, gemini, claude, pool)
    finally:
        await stack.stop()
        for server in (twilio_server, gemini_server, claude_server):
            await server.stop()


def gemini_image(request: dict[str, Any]) -> tuple[str, bytes]:
    parts = request["contents"][0]["parts"]
    inline = next(p["inlineData"] for p in parts if "inlineData" in p)
    # The REST API takes either spelling of the key; bytes arrive URL-safe base64 encoded.
    mime = inline.get("mimeType") or inline["mime_type"]
    return mime, base64.urlsafe_b64decode(inline["data"])


async def test_upload_with_asset_id_becomes_a_work_order_with_the_photo(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool, record_history: Any
) -> None:
    photo = jpeg_bytes()
    async with photo_rig(tmp_path, settings, client, pool) as rig:
        rig.gemini.push(Reply(body=finding()))
        response = await rig.upload(photo, asset_id="conveyor-1", note="puddle under the pump")
        assert response.status_code == 202, response.text
        photo_id = response.json()["photo_id"]
        result = await rig.result(photo_id)
        await record_history(
            client.get_workflow_handle(photo_workflow_id(photo_id)), "photo_intake_explicit_asset"
        )

        assert result.status == "completed" and result.asset_id == "conveyor-1"
        assert result.asset_found_by == "explicit" and not result.needs_manual_review
        # Gemini saw the image itself, as an image part, through the official client.
        mime, sent = gemini_image(rig.gemini.requests[0])
        assert (mime, sent) == ("image/jpeg", photo)
        assert "puddle under the pump" in json.dumps(rig.gemini.requests[0])

        order = await rig.get(f"/work-orders/{result.work_order_id}")
        assert order.status_code == 200
        body = order.json()
        assert body["asset_id"] == "conveyor-1" and body["priority"] == "HIGH"
        assert "mechanical seal" in body["title"] and "gemini" in body["description"]
        attachments = json.loads(
            await pool.fetchval(
                "SELECT attachments FROM work_orders WHERE external_key = $1", f"photo/{photo_id}"
            )
        )
        attached = Path(attachments[0]["path"])
        assert attached.is_relative_to(tmp_path / "photos")
        assert await asyncio.to_thread(attached.read_bytes) == photo

        history = (await rig.get("/assets/conveyor-1/photos")).json()["photos"]
        mine = next(p for p in history if p["photo_id"] == photo_id)
        assert mine["work_order_id"] == result.work_order_id and mine["status"] == "completed"
        assert mine["analysis"]["finding"]["severity"] == "high"
        image = await rig.get(mine["image_url"])
        assert image.content == photo and image.headers["content-type"] == "image/jpeg"

        # The image never travelled through Temporal: no payload holds it.
        handle = client.get_workflow_handle(photo_workflow_id(photo_id))
        encoded = base64.b64encode(photo[100:160]).decode()
        async for event in handle.fetch_history_events():
            assert encoded not in str(event)
            assert event.ByteSize() < 16_000


async def test_nameplate_text_identifies_the_machine(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    async with photo_rig(tmp_path, settings, client, pool) as rig:
        rig.gemini.push(Reply(body=finding(asset_tag_text="ASSET TAG: PRESS 1 / SN 88412")))
        response = await rig.upload(png_bytes(), filename="plate.png")
        assert response.status_code == 202, response.text
        result = await rig.result(response.json()["photo_id"])
        assert (result.asset_id, result.asset_found_by) == ("press-1", "nameplate")
        assert "press-1" in json.dumps(rig.gemini.requests[0])  # the known tags were offered


async def test_whatsapp_photo_asks_which_machine_and_replies_with_the_work_order(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    photo = png_bytes(48, 32, seed=5)
    async with photo_rig(tmp_path, settings, client, pool) as rig:
        rig.gemini.push(Reply(body=finding(asset_tag_text=None, severity="critical")))
        rig.twilio.media["ME0001"] = (photo, "image/png")
        s = rig.settings
        media = {
            "NumMedia": "1",
            "MediaUrl0": f"{rig.twilio_url}/media/ME0001",
            "MediaContentType0": "image/png",
        }
        answer = await post_inbound(
            s.api_url, s.public_url, rig.twilio.auth_token, TECH, "seal leaking", **media
        )
        assert answer.status_code == 200 and "Photo received" in answer.text, answer.text
        photo_id = re.search(r"(ph-[0-9a-f]{16})", answer.text)
        assert photo_id is not None

        question = await wait_for(
            "the asset question",
            lambda: next((m for m in rig.twilio.to(TECH) if "which machine" in m.body), None),
        )
        assert "Reply with the asset tag" in question.body and "pump-1" in question.body

        async def reply(text: str) -> str:
            r = await post_inbound(s.api_url, s.public_url, rig.twilio.auth_token, TECH, text)
            assert r.status_code == 200
            return r.text

        assert "not a known asset tag" in await reply("pump-9")
        assert "filed under pump-1" in await reply("Pump 1")
        result = await rig.result(photo_id[1])
        assert (result.asset_id, result.asset_found_by) == ("pump-1", "answer")
        done = await wait_for(
            "the work-order message",
            lambda: next((m for m in rig.twilio.to(TECH) if "work order WO-" in m.body), None),
        )
        assert result.work_order_id in done.body and "mechanical seal" in done.body
        assert gemini_image(rig.gemini.requests[0]) == ("image/png", photo)
        assert (
            await pool.fetchval(
                "SELECT status FROM asset_questions WHERE photo_id = $1", photo_id[1]
            )
            == "answered"
        )

        # The same webhook delivered twice files one photo.
        sid = "SM" + uuid.uuid4().hex
        rig.gemini.default = lambda _: Reply(body=finding(asset_tag_text="pump-1"))
        for _ in range(2):
            again = await post_inbound(
                s.api_url, s.public_url, rig.twilio.auth_token, TECH, "", MessageSid=sid, **media
            )
            assert again.status_code == 200 and "Photo received" in again.text
        twice = re.search(r"(ph-[0-9a-f]{16})", again.text)
        assert twice is not None
        assert await pool.fetchval("SELECT count(*) FROM photos WHERE id = $1", twice[1]) == 1
        assert (await rig.result(twice[1])).asset_id == "pump-1"


async def test_bad_uploads_are_refused_with_the_reason(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    async with photo_rig(tmp_path, settings, client, pool, keys=False) as rig:
        before = await pool.fetchval("SELECT count(*) FROM photos")
        missing = await rig.upload(jpeg_bytes(), token="wrong")
        assert missing.status_code == 401
        async with httpx.AsyncClient(base_url=rig.settings.api_url) as http:
            anonymous = await http.post("/photos", files={"image": ("a.jpg", jpeg_bytes())})
        assert anonymous.status_code == 401
        text = await rig.upload(b"%PDF-1.4 a manual, not a photo", filename="manual.pdf")
        assert text.status_code == 415 and "JPEG, PNG or WebP" in text.json()["error"]
        corrupt = await rig.upload(png_bytes()[:-40], filename="cut.png")
        assert corrupt.status_code == 415 and "corrupt" in corrupt.json()["error"]
        huge = await rig.upload(b"\xff\xd8\xff" + b"\x00" * (MAX_BYTES + 10))
        assert huge.status_code == 413 and "limit" in huge.json()["error"]
        assert await pool.fetchval("SELECT count(*) FROM photos") == before

        # Non-image WhatsApp media is refused in the reply, nothing fetched or filed.
        s = rig.settings
        pdf = await post_inbound(
            s.api_url,
            s.public_url,
            rig.twilio.auth_token,
            TECH,
            "",
            NumMedia="1",
            MediaUrl0=f"{rig.twilio_url}/media/MEpdf",
            MediaContentType0="application/pdf",
        )
        assert "not a photo" in pdf.text
        assert await pool.fetchval("SELECT count(*) FROM photos") == before


async def test_gemini_failing_is_retried_then_claude_answers(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    photo = jpeg_bytes(color=(20, 20, 200))
    async with photo_rig(tmp_path, settings, client, pool) as rig:
        rig.gemini.push(Reply(status=503, body="overloaded"), Reply(status=500, body="boom"))
        rig.claude.push(
            Reply(body=finding(equipment_type="contactor", visible_issue="scorched contacts"))
        )
        response = await rig.upload(photo, asset_id="mixer-1")
        photo_id = response.json()["photo_id"]
        result = await rig.result(photo_id)
        assert len(rig.gemini.requests) == 2 and len(rig.claude.requests) == 1
        assert "scorched contacts" in result.summary and not result.needs_manual_review
        blocks = rig.claude.requests[0]["messages"][0]["content"]
        image = next(b for b in blocks if b["type"] == "image")
        assert image["source"]["media_type"] == "image/jpeg"
        assert base64.b64decode(image["source"]["data"]) == photo
        rows = await pool.fetch(
            "SELECT provider, ok FROM llm_usage WHERE workflow_id = $1 ORDER BY id",
            photo_workflow_id(photo_id),
        )
        assert [(r["provider"], r["ok"]) for r in rows] == [
            ("gemini", False),
            ("gemini", False),
            ("anthropic", True),
        ]


async def test_every_model_failing_files_a_work_order_for_manual_review(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    async with photo_rig(tmp_path, settings, client, pool, photo_asset_wait_s=1.0) as rig:
        rig.gemini.default = lambda _: Reply(status=500, body="down")
        rig.claude.default = lambda _: Reply(
            status=529, body="overloaded", error_type="overloaded_error"
        )
        response = await rig.upload(png_bytes(), note="smell of burning near panel")
        photo_id = response.json()["photo_id"]
        result = await rig.result(photo_id)  # nobody names the machine: the timer runs out
        assert result.needs_manual_review and result.asset_id is None
        order = (await rig.get(f"/work-orders/{result.work_order_id}")).json()
        assert order["title"].startswith("[needs manual review]")
        assert "every vision model failed" in order["description"]
        assert "smell of burning" in order["description"]
        assert "Asset: not identified" in order["description"]
        row = await pool.fetchrow("SELECT * FROM photos WHERE id = $1", photo_id)
        assert row["status"] == "completed" and row["work_order_id"] == result.work_order_id
        assert (
            await pool.fetchval("SELECT status FROM asset_questions WHERE photo_id = $1", photo_id)
            == "expired"
        )
