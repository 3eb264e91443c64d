"""`factorylm demo --scenario photo`: a technician uploads a generated photo of conveyor-1 and
the scenario follows it to a work order and the asset's photo history.

Without an API key the offline provider answers (the work order is flagged for manual review
and says it was not analysed); with FACTORYLM_GEMINI_API_KEY set, Gemini analyses the photo.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import httpx
from PIL import Image, ImageDraw

from api.photo_intake import photo_workflow_id
from dev.demo.environment import Demo
from factorylm.models.photos import PhotoIntakeResult
from factorylm.settings import reveal

ASSET = "conveyor-1"


def demo_photo() -> bytes:
    """A small JPEG: a grey motor housing with a dark scorch mark and a nameplate."""
    image = Image.new("RGB", (320, 240), (150, 155, 160))
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 60, 280, 200), fill=(90, 95, 100))
    draw.ellipse((150, 100, 210, 150), fill=(30, 20, 15))
    draw.rectangle((60, 170, 150, 195), fill=(230, 230, 230))
    draw.text((64, 176), "CONVEYOR-1", fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


async def run_photo_scenario(demo: Demo, say: Any) -> dict[str, Any]:
    assert demo.client is not None
    settings = demo.settings
    t0 = time.monotonic()
    photo = await asyncio.to_thread(demo_photo)
    async with httpx.AsyncClient(base_url=settings.api_url, timeout=30) as http:
        response = await http.post(
            "/photos",
            files={"image": ("conveyor-1-scorch.jpg", photo, "image/jpeg")},
            data={"asset_id": ASSET, "note": "burn mark on the drive motor housing"},
            headers={"Authorization": f"Bearer {reveal(settings.api_token)}"},
        )
        response.raise_for_status()
        photo_id = response.json()["photo_id"]
        say(f"photo uploaded: POST /photos ({len(photo)} bytes JPEG) → {photo_id}, 202 accepted")
        handle = demo.client.get_workflow_handle(
            photo_workflow_id(photo_id), result_type=PhotoIntakeResult
        )
        result: PhotoIntakeResult = await asyncio.wait_for(handle.result(), timeout=60)
        say(f"workflow {handle.id}: {result.summary}")
        history = await http.get(
            f"/assets/{ASSET}/photos",
            headers={"Authorization": f"Bearer {reveal(settings.api_token)}"},
        )
        count = len(history.json()["photos"])
    say(
        f"work order {result.work_order_id} on {result.asset_id} with the photo attached; "
        f"GET /assets/{ASSET}/photos lists {count} photo(s)"
    )
    return {
        "status": result.status,
        "photo_id": photo_id,
        "asset_id": result.asset_id,
        "work_order_id": result.work_order_id,
        "needs_manual_review": result.needs_manual_review,
        "seconds": round(time.monotonic() - t0, 2),
    }
