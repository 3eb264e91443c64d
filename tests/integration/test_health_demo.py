"""`factorylm demo --scenario health` on a stack with free ports: the same code as the CLI."""

from __future__ import annotations

import uuid
from pathlib import Path

from temporalio.client import Client

from app.cli import build_parser
from dev.demo.environment import Demo, demo_settings
from dev.demo.health import run_health_scenario
from factorylm.settings import Settings
from factorylm.tracing import setup_tracing
from helpers import free_port, plant_with_free_ports


def test_health_is_a_demo_scenario() -> None:
    assert (
        build_parser().parse_args(["demo", "--once", "--scenario", "health"]).scenario == "health"
    )


async def test_a_silent_plc_gives_one_alert_and_a_restart(
    tmp_path: Path, settings: Settings, client: Client
) -> None:
    _, plant_file = plant_with_free_ports(tmp_path)
    queue = f"health-demo-{uuid.uuid4().hex[:8]}"
    s = demo_settings(
        settings.model_copy(
            update={
                "plant_file": plant_file,
                "task_queue": queue,
                "plc_task_queue": f"{queue}-edge",
                "api_port": free_port(),
                "approvers": ["whatsapp:+15550500001"],
            }
        )
    )
    setup_tracing("factorylm-test")  # as the CLI does: trace ids exist with no exporter too
    demo = Demo(s)
    said: list[str] = []
    try:
        await demo.up()
        summary = await run_health_scenario(demo, said.append)
    finally:
        await demo.down()
    assert summary["status"] == "completed"
    assert summary["alerts_sent"] == 1 and summary["collector_restarted"] is True
    assert len(summary["trace_id"]) == 32
    assert demo.twilio is not None
    (alert,) = [m for m in demo.twilio.sent if "FactoryLM health: critical" in m.body]
    assert summary["plc_id"] in alert.body and f"Trace: {summary['trace_id']}" in alert.body
    assert any("answers again" in line for line in said)
