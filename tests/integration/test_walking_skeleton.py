"""The walking skeleton, every hop real: simulated Modbus PLC -> collector -> COPY into the
hypertable -> drift check -> DriftResponseWorkflow -> approval through the API (update) ->
PLC write on the edge queue with read-back -> work order row. The same code as `make demo`."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
from temporalio.client import Client

from dev.demo.drift import run_drift_scenario
from dev.demo.environment import Demo, demo_settings, say
from factorylm.settings import Settings
from helpers import plant_with_free_ports


async def test_demo_scenario_end_to_end(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    _, plant_file = plant_with_free_ports(tmp_path)
    queue = f"skeleton-{uuid.uuid4().hex[:8]}"
    s = demo_settings(
        settings.model_copy(
            update={
                "plant_file": plant_file,
                "task_queue": queue,
                "plc_task_queue": f"{queue}-edge",
            }
        )
    )
    demo = Demo(s)
    try:
        await demo.up()
        assert not demo.cluster_started and not demo.temporal_started  # reused the running ones
        summary = await run_drift_scenario(demo, say)
    finally:
        await demo.down()

    assert summary["status"] == "completed"
    assert summary["workflow_id"] == "drift-demo-plant-conveyor-1-vibration"
    assert summary["action"] == "shutdown_motor"
    assert summary["approved_by"] == s.approvers[0]
    assert summary["value_written"] == summary["value_read_back"] == 0
    wo_id = int(str(summary["work_order_id"]).removeprefix("WO-"))
    wo = await pool.fetchrow("SELECT * FROM work_orders WHERE id = $1", wo_id)
    assert wo["asset_id"] == "conveyor-1" and "shutdown_motor" in wo["description"]
    audit = await pool.fetchrow(
        "SELECT * FROM plc_writes WHERE workflow_id = $1 ORDER BY requested_at DESC LIMIT 1",
        summary["workflow_id"],
    )
    assert audit["status"] == "verified" and audit["approved_by"] == s.approvers[0]
    # The samples that raised the alarm are in the hypertable, the fault visible in them.
    peak = await pool.fetchval(
        "SELECT max(value) FROM samples WHERE plc_id = 'conveyor-1' AND metric = 'vibration' "
        "AND time > now() - interval '5 minutes'"
    )
    assert peak > 2.1 + 4 * 0.3
    # Stopping flushed everything: nothing was left in the writer's buffer.
    assert demo.stack is not None and demo.stack.ingest is not None
    assert demo.stack.ingest.writer.pending == 0 and demo.stack.ingest.writer.dropped == 0
