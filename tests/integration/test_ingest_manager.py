"""The collector manager against real peers and the real database: a PLC that vanishes and
returns (backoff, reconnect, one alert after 3 failures, the others unaffected), the status
table and GET /collectors, and a database outage mid-ingest that loses nothing."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml
from temporalio.client import Client

from api.app import create_app
from dev.simulator.plant import PlantSimulator
from factorylm.plant import Plant, Plc
from factorylm.settings import Settings, reveal
from helpers import SwitchableProxy, free_port, plant_with_free_ports, until
from ingest.collector import CollectorBase
from ingest.manager import CollectorAlert, CollectorManager
from ingest.writer import BatchWriter


def _plant(tmp_path: Path, ids: set[str], suffix: str) -> Plant:
    _, path = plant_with_free_ports(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["plcs"] = [p for p in raw["plcs"] if p["id"] in ids]
    for plc in raw["plcs"]:
        plc["id"] = f"{plc['id']}-{suffix}"  # rows of this test only
        plc["timeout_ms"] = 200
    raw["actions"] = []
    return Plant.model_validate(raw)


class Samples:
    def __init__(self) -> None:
        self.by_plc: dict[str, list[datetime]] = {}
        self.starts: dict[str, list[float]] = {}  # monotonic start of each good cycle

    def __call__(self, plc: Plc, when: datetime, mono: float, values: dict[str, float]) -> None:
        self.by_plc.setdefault(plc.id, []).append(when)
        self.starts.setdefault(plc.id, []).append(mono)

    def count(self, plc_id: str) -> int:
        return len(self.by_plc.get(plc_id, []))


def off_phase_s(collector: CollectorBase, starts: list[float]) -> float:
    """Median distance of cycle starts from the collector's own phase, in seconds."""
    period = collector.period_s
    offsets = [(t - collector.phase_s + period / 2) % period - period / 2 for t in starts]
    return abs(statistics.median(offsets))


@pytest.fixture
async def two_plcs(tmp_path: Path) -> AsyncIterator[tuple[Plant, PlantSimulator]]:
    plant = _plant(tmp_path, {"conveyor-1", "press-1"}, tmp_path.name[-12:].replace("_", "-"))
    sim = PlantSimulator(plant)
    await sim.start()
    yield plant, sim
    await sim.stop()


async def test_vanishing_plc_alerts_once_reconnects_and_never_slows_the_other(
    two_plcs: tuple[Plant, PlantSimulator],
    settings: Settings,
    pool: asyncpg.Pool,
    client: Client,
) -> None:
    plant, sim = two_plcs
    conveyor, press = plant.plcs[0].id, plant.plcs[1].id
    samples = Samples()
    notified: list[CollectorAlert] = []

    async def notifier(alert: CollectorAlert) -> None:
        notified.append(alert)

    manager = CollectorManager(
        plant,
        samples,
        dsn=settings.pg_dsn,
        notifier=notifier,
        health_interval_s=0.5,
        max_backoff_s=0.4,
    )
    by_id = {c.plc.id: c for c in manager.collectors}
    await manager.start()
    try:
        await until("both PLCs polled", lambda: all(c.cycles >= 3 for c in by_id.values()))
        conveyor_before = samples.count(conveyor)
        t_cut = time.monotonic()
        await sim.inject(press, None, "offline")
        await until("the alert", lambda: bool(notified))
        # Keep it down a little longer: more failures, still one alert for the episode.
        await until("more failures", lambda: by_id[press].consecutive_errors >= 5)
        outage_s = time.monotonic() - t_cut
        assert len(notified) == 1 and notified[0].plc_id == press
        assert notified[0].consecutive_errors == 3
        assert "check its power" in notified[0].body and press in notified[0].body
        rows = await pool.fetch(
            "SELECT * FROM notifications WHERE dedup_key LIKE $1", f"collector/{press}/%"
        )
        assert len(rows) == 1
        assert (rows[0]["channel"], rows[0]["recipient"]) == ("log", "operations")
        assert rows[0]["dedup_key"] == notified[0].dedup_key

        # conveyor-1 kept its cadence while press-1 timed out again and again.
        conveyor_polls = samples.count(conveyor) - conveyor_before
        expected = outage_s / (plant.plcs[0].poll_interval_ms / 1000)
        assert conveyor_polls >= expected - 2
        assert by_id[conveyor].missed == 0 and by_id[conveyor].consecutive_errors == 0
        lateness = list(by_id[conveyor].lateness)[-conveyor_polls:]
        assert statistics.quantiles(lateness, n=100)[98] < 0.05

        status = await pool.fetchrow("SELECT * FROM collector_status WHERE plc_id = $1", press)
        assert status["state"] == "failing" and status["consecutive_errors"] >= 3
        assert "S7" in status["last_error"]

        await sim.clear(press)
        await until("press-1 reconnects", lambda: by_id[press].consecutive_errors == 0)
        recovered_at = by_id[press].cycles
        await until("press-1 polls again", lambda: by_id[press].cycles >= recovered_at + 5)
        # Back on its own phase, not wherever the reconnect happened to land.
        assert off_phase_s(by_id[press], samples.starts[press][-5:]) < 0.01
        await until(
            "status row back to ok",
            lambda: manager.state(by_id[press]) == "ok",
        )
        await manager.write_status()

        app = create_app(settings, client, pool)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api"
        ) as http:
            assert (await http.get("/collectors")).status_code == 401
            response = await http.get(
                "/collectors", headers={"Authorization": f"Bearer {reveal(settings.api_token)}"}
            )
        assert response.status_code == 200
        listed = {c["plc_id"]: c for c in response.json()["collectors"]}
        assert listed[press]["state"] == "ok" and listed[press]["consecutive_errors"] == 0
        assert listed[conveyor]["state"] == "ok" and listed[conveyor]["missed_cycles"] == 0
        assert listed[press]["protocol"] == "s7" and listed[press]["last_good_at"]
    finally:
        await manager.stop()
        await manager.close()


async def test_database_outage_mid_ingest_loses_nothing_within_the_buffer(
    tmp_path: Path, settings: Settings, pool: asyncpg.Pool
) -> None:
    suffix = tmp_path.name[-12:].replace("_", "-")
    plant = _plant(tmp_path, {"conveyor-1"}, suffix)
    plc_id = plant.plcs[0].id
    sim = PlantSimulator(plant)
    proxy = SwitchableProxy(settings.pg_port)
    await proxy.start()
    via_proxy = settings.model_copy(update={"pg_port": proxy.port})
    writer = BatchWriter(via_proxy.pg_dsn, max_rows=50, max_delay_s=0.1, max_backoff_s=0.2)
    accepted = 0

    def sink(plc: Plc, when: datetime, mono: float, values: dict[str, float]) -> None:
        nonlocal accepted
        accepted += len(values)
        writer.add((when, plc.id, name, value) for name, value in values.items())

    manager = CollectorManager(plant, sink, dsn=settings.pg_dsn, health_interval_s=60)
    collector = manager.collectors[0]
    await sim.start()
    writer.start()
    await manager.start()
    try:
        await until("rows written", lambda: writer.written >= 20)
        proxy.cut()
        cut_at = collector.cycles
        await until("the writer notices", lambda: writer.last_error is not None)
        await until("polling through the outage", lambda: collector.cycles >= cut_at + 8)
        assert writer.pending > 0 and writer.dropped == 0
        proxy.up = True
        await until("the backlog drains", lambda: writer.pending == 0, timeout_s=20)
    finally:
        await manager.stop()
        await writer.stop()
        await manager.close()
        await sim.stop()
        await proxy.close()
    stored = await pool.fetchval("SELECT count(*) FROM samples WHERE plc_id = $1", plc_id)
    assert stored == accepted == writer.written and writer.dropped == 0
    # No hole: every poll's timestamp is there, one per cycle.
    times = await pool.fetchval(
        "SELECT count(DISTINCT time) FROM samples WHERE plc_id = $1", plc_id
    )
    assert times == collector.cycles


async def test_plcs_sharing_an_interval_poll_on_their_own_phases(
    tmp_path: Path, settings: Settings
) -> None:
    """Ten Modbus TCP devices at 200 ms start their cycles 20 ms apart, each on its phase."""
    raw: dict[str, object] = {
        "name": "phases",
        "plcs": [
            {
                "id": f"phase-{tmp_path.name[-8:]}-{i}",
                "vendor": "generic_modbus",
                "protocol": "modbus_tcp",
                "port": free_port(),
                "poll_interval_ms": 200,
                "metrics": [{"name": "r0", "register": 0, "type": "u16"}],
            }
            for i in range(10)
        ],
    }
    plant = Plant.model_validate(raw)
    sim = PlantSimulator(plant)
    samples = Samples()
    manager = CollectorManager(plant, samples, dsn=settings.pg_dsn, health_interval_s=60)
    await sim.start()
    await manager.start()
    try:
        await until("ten cycles each", lambda: all(c.cycles >= 10 for c in manager.collectors))
    finally:
        await manager.stop()
        await manager.close()
        await sim.stop()
    phases = sorted(c.phase_s for c in manager.collectors)
    assert [round(b - a, 6) for a, b in itertools.pairwise(phases)] == [0.02] * 9
    for c in manager.collectors:
        assert off_phase_s(c, samples.starts[c.plc.id]) < 0.01, c.plc.id
