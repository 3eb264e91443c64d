"""`factorylm ingest` as its own process: SIGTERM flushes every accepted sample before exit."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import asyncpg
import yaml

from dev.simulator.modbus import SimulatedModbusPlc
from factorylm.settings import PROJECT_ROOT, Settings
from helpers import plant_with_free_ports, until


async def test_sigterm_flushes_the_buffer_before_exit(
    tmp_path: Path, settings: Settings, pool: asyncpg.Pool
) -> None:
    plant, path = plant_with_free_ports(tmp_path)
    raw = yaml.safe_load(path.read_text())
    plc_id = f"sigterm-{os.getpid()}"
    raw["plcs"] = [raw["plcs"][0] | {"id": plc_id, "poll_interval_ms": 50}]
    raw["actions"] = []
    path.write_text(yaml.safe_dump(raw))
    sim = SimulatedModbusPlc(plant.plcs[0].model_copy(update={"id": plc_id}))
    await sim.start()
    env = {
        **os.environ,
        "FACTORYLM_PLANT_FILE": str(path),
        "FACTORYLM_PG_DATABASE": settings.pg_database,
        "FACTORYLM_PG_PORT": str(settings.pg_port),
        "FACTORYLM_TEMPORAL_ADDRESS": settings.temporal_address,
        "FACTORYLM_TEMPORAL_NAMESPACE": settings.temporal_namespace,
        # Nothing is written before the stop: only the SIGTERM flush can store these rows.
        "FACTORYLM_BATCH_MAX_DELAY_S": "600",
        "FACTORYLM_BATCH_MAX_ROWS": "1000000",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "ingest",
        env=env,
        cwd=PROJECT_ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        def polled() -> bool:
            assert proc.returncode is None, "ingest exited early"
            return sim.requests_answered >= 40

        await until("ingest to poll the simulated PLC 40 times", polled)
        assert await pool.fetchval("SELECT count(*) FROM samples WHERE plc_id = $1", plc_id) == 0
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sim.stop()
    assert proc.returncode == 0, stderr.decode()
    stored = await pool.fetchval("SELECT count(*) FROM samples WHERE plc_id = $1", plc_id)
    assert stored >= 40 * 4  # every poll of the 4 metrics before the signal
    writer = await pool.fetch("SELECT * FROM ingest_writer_status")
    assert any(w["samples_written"] >= stored and w["samples_pending"] == 0 for w in writer)
