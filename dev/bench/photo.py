"""photo_to_workorder_p99_ms: POST /photos → the work order opened, on the demo stack with
Gemini faked at the HTTP boundary (the official google-genai client against the local Gemini
API). The anchor is the same work without the product around it: check the image, one Gemini
vision call through the same client, one work-order insert.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
from pydantic import SecretStr

from api.photo_intake import photo_workflow_id
from dev.bench.approval import demo_stack
from dev.bench.report import p99_line
from dev.demo.photo import demo_photo
from dev.fakes.gemini import fake_gemini
from dev.fakes.scripted import Reply, Script
from factorylm.cmms.builtin import BuiltinCmms
from factorylm.llm.base import json_schema_for
from factorylm.models.photos import PhotoIntakeResult, VisionFinding
from factorylm.models.work_orders import OpenWorkOrderInput
from factorylm.photos.images import check_image
from factorylm.photos.vision import SYSTEM, GeminiVision, Image
from factorylm.settings import Settings, reveal

FINDING = {
    "equipment_type": "induction motor",
    "visible_issue": "scorch mark on the terminal box",
    "severity": "high",
    "suggested_work": "isolate, open the terminal box, check the connections",
    "confidence": 0.9,
    "asset_tag_text": "CONVEYOR-1",
}


async def photo_to_workorder_p99_ms(settings: Settings, rounds: int = 30) -> dict[str, Any]:
    script = Script(default=lambda _: Reply(body=FINDING))
    gemini = fake_gemini(script)
    await gemini.start()
    latencies: list[float] = []
    floor: list[float] = []
    photo = demo_photo()
    try:
        keyed = settings.model_copy(
            update={
                "gemini_api_key": SecretStr("gemini-test-key"),
                "gemini_base_url": gemini.url,
                "llm_primary": "gemini",
            }
        )
        async with demo_stack(keyed) as demo:
            assert demo.client is not None and demo.stack is not None
            pool = demo.stack.pool
            assert pool is not None
            s = demo.settings
            auth = {"Authorization": f"Bearer {reveal(s.api_token)}"}
            async with httpx.AsyncClient(base_url=s.api_url, timeout=30) as http:
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    response = await http.post(
                        "/photos",
                        files={"image": ("bench.jpg", photo, "image/jpeg")},
                        data={"note": "bench"},
                        headers=auth,
                    )
                    response.raise_for_status()
                    handle = demo.client.get_workflow_handle(
                        photo_workflow_id(response.json()["photo_id"]),
                        result_type=PhotoIntakeResult,
                    )
                    result: PhotoIntakeResult = await handle.result()
                    latencies.append((time.perf_counter() - t0) * 1000)
                    assert result.asset_id == "conveyor-1" and result.work_order_id, result
            vision = GeminiVision(s)
            cmms = BuiltinCmms(pool)
            schema = json_schema_for(VisionFinding)
            for _ in range(rounds):
                f0 = time.perf_counter()
                checked = await asyncio.to_thread(check_image, photo, s.photo_max_bytes)
                done = await vision.describe(
                    Image(photo, checked.content_type), system=SYSTEM, prompt="bench", schema=schema
                )
                VisionFinding.model_validate(done.data)
                await cmms.open(
                    OpenWorkOrderInput(
                        external_key=f"bench-photo-anchor/{uuid.uuid4().hex}",
                        title="bench",
                        description="bench",
                    )
                )
                floor.append((time.perf_counter() - f0) * 1000)
            await pool.execute(
                "DELETE FROM work_orders WHERE external_key LIKE 'bench-photo-anchor/%'"
            )
    finally:
        await gemini.stop()
    return p99_line(
        "photo_to_workorder_p99_ms",
        latencies,
        floor,
        "p99 of image check + one Gemini vision call (same client, same fake) + "
        "one work-order insert, in process",
        rounds=rounds,
    )
