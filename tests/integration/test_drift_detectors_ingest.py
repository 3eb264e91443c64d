"""The CUSUM and the hard limits through the real ingest path: a real Modbus TCP peer
(dev/simulator, pymodbus's server) polled by the real collector, samples COPY'd into
PostgreSQL, the detector, and the workflow start on the real Temporal server — with the
production 300 s window, where the windowed mean alone would need ~100 s for a 6σ step."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from temporalio.client import Client

from dev.simulator.modbus import SimulatedModbusPlc
from dev.simulator.signals import FaultKind
from factorylm.plant import Plant
from factorylm.settings import Settings
from helpers import modbus_plant, until
from ingest.alerts import Started
from ingest.drift import DriftConfig
from ingest.service import IngestService


def kiln_plant(plc_id: str) -> Plant:
    return modbus_plant(
        [plc_id],
        [
            # The shipped detectors: no detector fields at all.
            {"name": "vibration", "register": 0, "type": "f32",
             "baseline": {"mean": 5.0, "std": 1.0}},
            # 4σ above its mean: normal noise (0.6σ) never gets there, a 6σ step does.
            {"name": "temp", "register": 2, "type": "f32",
             "baseline": {"mean": 80.0, "std": 2.5}, "max": 90.0},
        ],
    )  # fmt: skip


@pytest.fixture
async def kiln() -> AsyncIterator[tuple[Plant, SimulatedModbusPlc]]:
    plant = kiln_plant(f"kiln-{uuid.uuid4().hex[:6]}")
    sim = SimulatedModbusPlc(plant.plcs[0], seed=17, tick_s=0.025)
    await sim.start()
    yield plant, sim
    await sim.stop()


@pytest.fixture
async def ingest(
    kiln: tuple[Plant, SimulatedModbusPlc], settings: Settings, client: Client
) -> AsyncIterator[IngestService]:
    plant, _ = kiln
    s = settings.model_copy(update={"task_queue": f"det-{uuid.uuid4().hex[:8]}"})
    # The production window and on-delay: what a plant gets without the demo's 1 s window.
    service = IngestService(s, plant, client, drift=DriftConfig(window_s=300.0, on_delay_s=0.0))
    await service.start()
    yield service
    await service.stop()
    # Nobody polls this test's queue; evidence signals list a workflow more than once.
    for workflow_id in {started.workflow_id for started in service.starter.started}:
        await client.get_workflow_handle(workflow_id).terminate("test over")


def started_for(service: IngestService, metric: str) -> Started | None:
    return next((s for s in service.starter.started if s.alert.metric == metric), None)


async def test_a_6_sigma_step_reaches_the_workflow_start_in_seconds_at_the_shipped_defaults(
    kiln: tuple[Plant, SimulatedModbusPlc], ingest: IngestService, client: Client
) -> None:
    plant, sim = kiln
    plc_id = plant.plcs[0].id
    collector = ingest.collectors[0]
    await until("a few seconds of normal samples", lambda: collector.cycles >= 40)
    assert ingest.starter.started == []  # normal noise raised nothing
    sim.inject("vibration", FaultKind.STEP, 6.0)
    injected = time.monotonic()
    # The 300 s mean would cross 2σ only after ~100 s of the fault; the shipped CUSUM
    # (k = 0.75, h = 10) needs two samples, the per-sample limit (λ = 1, L = 5.5) usually one
    # (50 ms each). 10 s leaves room for a loaded machine and still tells them apart.
    first: Started = await until(
        "the detectors' workflow start", lambda: started_for(ingest, "vibration"), timeout_s=10.0
    )
    elapsed = time.monotonic() - injected
    assert first.workflow_id == f"drift-plant-{plc_id}-vibration" and elapsed < 10.0
    assert first.alert.detection is not None
    assert first.alert.detection.detector in ("cusum", "ewma")
    # The alarm carries the detector's estimate of the shift (the EWMA's level with λ = 1 is
    # the sample's own z, about 6; the CUSUM's is the mean z since its sum left 0), not the
    # barely-moved window mean. Noise in the samples before the step can pull the CUSUM's
    # down, so what holds for both is well above the 2σ threshold.
    assert first.alert.sigma > 3
    assert abs((first.alert.window_mean - 5.0) / 1.0) < 2  # the window had not seen it yet
    described = await client.get_workflow_handle(first.workflow_id).describe()
    assert described.search_attributes["PlcId"] == [plc_id]


async def test_a_hard_limit_fires_on_the_first_sample_past_it(
    kiln: tuple[Plant, SimulatedModbusPlc], ingest: IngestService, pool: asyncpg.Pool
) -> None:
    plant, sim = kiln
    plc_id = plant.plcs[0].id
    await until("normal samples", lambda: ingest.collectors[0].cycles >= 20)
    sim.inject("temp", FaultKind.STEP, 6.0)  # 80 + 6 × 2.5 = 95 > 90
    first: Started = await until(
        "the hard limit's workflow start", lambda: started_for(ingest, "temp"), timeout_s=10.0
    )
    assert first.alert.detection is not None and first.alert.detection.detector == "limit"
    assert "above max 90" in first.alert.detection.reason
    # The sample the alarm names is the earliest stored temp above 90: no sample past the
    # limit went by without one.
    earliest = await until(
        "the stored samples past the limit",
        lambda: pool.fetchval(
            "SELECT min(time) FROM samples WHERE plc_id = $1 AND metric = 'temp' AND value > 90",
            plc_id,
        ),
    )
    assert earliest == first.alert.sample_time
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM samples WHERE plc_id = $1 AND metric = 'temp' AND time < $2",
            plc_id,
            earliest,
        )
        >= 20
    )
