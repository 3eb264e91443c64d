"""The photo demo scenario on a stack with free ports, and its CLI option."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from temporalio.client import Client

from app.cli import build_parser
from app.stack import Stack
from dev.demo.environment import Demo
from dev.demo.photo import run_photo_scenario
from factorylm.settings import Settings
from helpers import free_port, plant_with_free_ports


def test_demo_scenario_option_defaults_to_drift() -> None:
    parser = build_parser()
    assert parser.parse_args(["demo", "--once"]).scenario == "drift"
    assert parser.parse_args(["demo", "--once", "--scenario", "photo"]).scenario == "photo"


async def test_photo_scenario_completes_offline_with_a_work_order(
    tmp_path: Path, settings: Settings, client: Client
) -> None:
    plant, _ = plant_with_free_ports(tmp_path)
    queue = f"photo-demo-{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(
        update={
            "task_queue": queue,
            "plc_task_queue": f"{queue}-edge",
            "api_port": free_port(),
            "photo_dir": tmp_path / "photos",
            "gemini_api_key": None,
            "anthropic_api_key": None,
        }
    )
    stack = Stack(s, plant, client, run_ingest=False, run_edge_worker=False)
    await stack.start()
    try:
        demo = Demo(s, client=client, stack=stack)
        said: list[str] = []
        summary = await run_photo_scenario(demo, said.append)
    finally:
        await stack.stop()
    line = json.loads(json.dumps(summary))
    assert line["status"] == "completed" and line["asset_id"] == "conveyor-1"
    assert line["photo_id"].startswith("ph-") and line["work_order_id"].startswith("WO-")
    assert line["needs_manual_review"] is True  # offline: no key, a person reviews
    assert isinstance(line["seconds"], float)
    assert any("offline" in m for m in said)
