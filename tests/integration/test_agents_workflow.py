"""The drift workflow with its agents: Manual Hunter, Alarm Triage and Watchman in parallel,
then the Weaver, whose proposals plan_response gates; the report lands in the work order and
every agent's output in the workflow history."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fakes.anthropic_api import fake_anthropic
from fakes.server import Reply, Script
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from app.stack import Stack
from dev.simulator.modbus import SimulatedModbusPlc
from factorylm.embeddings import get_embedder
from factorylm.manuals import ManualStore
from factorylm.memory import VectorMemory
from factorylm.models.agents import OutcomeKind
from factorylm.plant import Plant
from factorylm.settings import PROJECT_ROOT, Settings
from helpers import make_alert, plant_with_free_ports
from workflows.drift_response import DriftResponseWorkflow

AGENTS = ("manual_hunter", "alarm_triage", "watchman", "weaver_report")


async def _rig(
    tmp_path: Path, settings: Settings, client: Client, **extra: Any
) -> tuple[Settings, Plant, Stack, SimulatedModbusPlc]:
    plant, _ = plant_with_free_ports(tmp_path)
    queue = f"agents-{uuid.uuid4().hex[:8]}"
    s = Settings.model_validate(
        {
            **settings.model_dump(),
            "task_queue": queue,
            "plc_task_queue": f"{queue}-edge",
            "approval_timeout_s": 4.0,
            **extra,
        }
    )
    sim = SimulatedModbusPlc(plant.plcs[0], seed=1)
    await sim.start()
    stack = Stack(s, plant, client, run_ingest=False, run_api=False)
    await stack.start()
    return s, plant, stack, sim


@pytest.fixture
async def manuals(pool: asyncpg.Pool, settings: Settings) -> None:
    store = ManualStore(pool, get_embedder(settings))
    for path in sorted((PROJECT_ROOT / "manuals").glob("*.md")):
        await store.add(path)


async def _history_activities(client: Client, workflow_id: str) -> dict[str, list[int]]:
    """activity type -> the workflow task that scheduled it (same task = started together)."""
    found: dict[str, list[int]] = {}
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            found.setdefault(attrs.activity_type.name, []).append(
                attrs.workflow_task_completed_event_id
            )
    return found


async def test_the_agents_run_in_parallel_and_their_report_reaches_the_work_order(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool, manuals: None
) -> None:
    # A precedent on another machine: the triage should lead with it.
    memory = VectorMemory(pool, get_embedder(settings))
    past = await pool.fetchval(
        """INSERT INTO drift_events (workflow_id, plc_id, vendor, metric, magnitude_sigma,
               window_mean, baseline_mean, baseline_std, detected_at, text)
           VALUES ($1, 'conveyor-9', 'siemens_s7', 'vibration', 2.4, 2.4, 0, 1,
                   '2026-01-15T08:00:00Z', $2) RETURNING id""",
        f"precedent-{uuid.uuid4().hex[:6]}",
        make_alert(2.4, plc="conveyor-9").describe().replace("generic_modbus", "siemens_s7"),
    )
    await memory.store_embedding(
        past, await pool.fetchval("SELECT text FROM drift_events WHERE id = $1", past)
    )
    await memory.set_outcome(
        past,
        text="fixed bearing",
        kind=OutcomeKind.RESOLVED,
        action_taken="replaced_bearing",
        resolved=True,
    )

    s, _, stack, sim = await _rig(tmp_path, settings, client)
    try:
        alert = make_alert(2.5)
        handle = await client.start_workflow(
            DriftResponseWorkflow.run,
            alert,
            id=f"{alert.workflow_id}-{uuid.uuid4().hex[:6]}",
            task_queue=s.task_queue,
        )
        result = await handle.result()
    finally:
        await stack.stop()
        await sim.stop()

    assert (result.action, result.status) == ("reduce_motor_speed_to_60pct", "completed")
    scheduled = await _history_activities(client, handle.id)
    for agent in AGENTS:
        assert agent in scheduled, agent
    parallel = {scheduled[a][0] for a in ("manual_hunter", "alarm_triage", "watchman")}
    assert len(parallel) == 1  # scheduled by one workflow task: they ran side by side
    assert scheduled["weaver_report"][0] > next(iter(parallel))
    assert scheduled["plan_response"][0] > scheduled["weaver_report"][0]

    description = await pool.fetchval(
        "SELECT description FROM work_orders WHERE external_key LIKE $1", f"{handle.id}/%"
    )
    assert "## vibration drift on conveyor-1 (+2.5σ)" in description
    assert "Offline report" in description
    assert "Last time this worked: replaced bearing" in description
    assert "on conveyor-9 (siemens_s7" in description
    assert "### From the manuals" in description and ".md §" in description
    assert "- reduce_motor_speed_to_60pct:" in description
    event = await pool.fetchrow(
        "SELECT vector_dims(embedding) AS dims FROM drift_events WHERE id = $1", result.event_id
    )
    assert event["dims"] == 384


def _claude(request: dict[str, Any]) -> Reply:
    tool = request["tool_choice"]["name"]
    if tool == "triage_draft":
        return Reply(
            body={"checklist": ["Check the bolts", "Check the coupling", "Check the bearing"]}
        )
    return Reply(
        body={
            "summary": "Vibration is far above normal; slow down first, then inspect.",
            "findings": ["Manuals point at looseness or bearing wear."],
            "proposals": [
                {"action": "reduce_motor_speed_to_60pct", "reason": "slowing down buys time"},
                {"action": "shutdown_motor", "reason": "if vibration keeps rising"},
            ],
        }
    )


async def test_the_weaver_on_claude_feeds_plan_response(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    script = Script(default=_claude)
    server = fake_anthropic(script)
    await server.start()
    try:
        s, _, stack, sim = await _rig(
            tmp_path,
            settings,
            client,
            anthropic_api_key="sk-ant-test",
            anthropic_base_url=server.url,
        )
        try:
            alert = make_alert(6.0)
            handle = await client.start_workflow(
                DriftResponseWorkflow.run,
                alert,
                id=f"{alert.workflow_id}-{uuid.uuid4().hex[:6]}",
                task_queue=s.task_queue,
            )
            result = await handle.result()
        finally:
            await stack.stop()
            await sim.stop()
    finally:
        await server.stop()
    # At +6σ the rules alone would ask to shut the motor down; the Weaver's first catalog
    # choice is allowed here, so plan_response takes it (and it needs no approval).
    assert (result.action, result.policy, result.status) == (
        "reduce_motor_speed_to_60pct",
        "auto",
        "completed",
    )
    tools = sorted({r["tool_choice"]["name"] for r in script.requests})
    assert tools == ["triage_draft", "weaver_draft"]
    usage = await pool.fetch(
        "SELECT agent, activity, provider, ok FROM llm_usage WHERE workflow_id = $1 ORDER BY id",
        handle.id,
    )
    assert {(u["agent"], u["activity"], u["provider"], u["ok"]) for u in usage} == {
        ("alarm_triage", "alarm_triage", "anthropic", True),
        ("weaver", "weaver_report", "anthropic", True),
    }
    description = await pool.fetchval(
        "SELECT description FROM work_orders WHERE external_key LIKE $1", f"{handle.id}/%"
    )
    assert "_Written by anthropic claude-" in description
    assert "slowing down buys time (Weaver; catalog threshold reached)" in description
