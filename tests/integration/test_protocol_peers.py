"""Every protocol against its real peer: the product's drivers reading (decode, scale) and
writing the simulator's snap7, cpppo, pymodbus TCP and RTU and asyncua servers, and a PLC that
stops answering and comes back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dev.simulator.plant import PlantSimulator
from factorylm.drivers import PlcDriver, PlcError, driver_for
from factorylm.plant import Plant, Plc, Setpoint
from helpers import plant_with_free_ports


@pytest.fixture(scope="module")
async def plant_sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PlantSimulator]:
    tmp = tmp_path_factory.mktemp("protocol-peers")
    _, path = plant_with_free_ports(tmp)
    raw = yaml.safe_load(path.read_text())
    # Setpoints for the write tests, one per protocol, with the protocol's own addressing.
    extra: dict[str, dict[str, Any]] = {
        "press-1": {"name": "speed_setpoint", "db": 2, "offset": 0, "type": "real"},
        "mixer-1": {"name": "speed_setpoint", "tag": "Speed_SP", "type": "dint"},
        "pump-1": {"name": "speed_setpoint", "register": 60, "type": "u32", "word_order": "little"},
        "oven-1": {"name": "speed_setpoint", "node_id": "ns=2;s=oven-1.speed_sp", "type": "double"},
    }
    for plc in raw["plcs"]:
        plc["timeout_ms"] = 300
        if plc["id"] == "oven-1":  # its own setpoint stays: the catalog names it
            plc["setpoints"].append({**extra["oven-1"], "min": 0, "max": 3000})
        elif plc["id"] in extra:
            plc["setpoints"] = [{**extra[plc["id"]], "min": 0, "max": 3000}]
        if plc["id"] == "press-1":
            plc["setpoints"].append(
                {
                    "name": "motor_run",
                    "db": 2,
                    "offset": 4,
                    "bit": 3,
                    "type": "bool",
                    "min": 0,
                    "max": 1,
                }
            )
    sim = PlantSimulator(Plant.model_validate(raw), seed=11)
    await sim.start()
    yield sim
    await sim.stop()


PLC_IDS = ["conveyor-1", "press-1", "mixer-1", "pump-1", "oven-1"]


@pytest.fixture
async def driver(
    plant_sim: PlantSimulator, request: pytest.FixtureRequest
) -> AsyncIterator[PlcDriver]:
    plc: Plc = plant_sim.peers[request.param].plc
    drv = driver_for(plc)
    yield drv
    await drv.close()


@pytest.mark.parametrize("driver", PLC_IDS, indirect=True)
async def test_reads_every_metric_decoded_and_scaled(
    plant_sim: PlantSimulator, driver: PlcDriver
) -> None:
    plc = driver.plc
    peer = plant_sim.peers[plc.id]
    await peer.tick()
    # The peer ticks on its own (every 50 ms for some): compare against what it held both just
    # before and just after the driver's read, so no tick fell in between.
    for _attempt in range(20):
        before = {m.name: await peer.read(m.name) for m in plc.metrics}
        values = await driver.read_points(list(plc.metrics))
        held = {m.name: await peer.read(m.name) for m in plc.metrics}
        if held == before:
            break
    assert set(values) == {m.name for m in plc.metrics}
    for metric in plc.metrics:
        # What the driver decoded is what the peer holds, to the register's resolution.
        resolution = metric.scale if metric.type in ("u16", "i16", "u32", "i32") else 1e-3
        assert values[metric.name] == pytest.approx(held[metric.name], abs=resolution)
        if metric.baseline is not None and metric.name != "run_hours":
            base = metric.baseline
            assert abs(values[metric.name] - base.mean) < 6 * base.std, metric.name


@pytest.mark.parametrize("driver", ["press-1", "mixer-1", "pump-1", "oven-1"], indirect=True)
async def test_writes_a_setpoint_and_reads_it_back(
    plant_sim: PlantSimulator, driver: PlcDriver
) -> None:
    setpoint = driver.plc.setpoint("speed_setpoint")
    assert setpoint is not None
    await driver.write_point(setpoint, 1234)
    assert await plant_sim.peers[driver.plc.id].read("speed_setpoint") == 1234
    assert (await driver.read_points([setpoint]))["speed_setpoint"] == 1234
    # A second single write: pycomm3 1.2.16 corrupted exactly this case before the fix.
    await driver.write_point(setpoint, 1500)
    assert (await driver.read_points([setpoint]))["speed_setpoint"] == 1500


@pytest.mark.parametrize("driver", ["press-1"], indirect=True)
async def test_s7_bool_write_changes_only_its_bit(
    plant_sim: PlantSimulator, driver: PlcDriver
) -> None:
    run = driver.plc.setpoint("motor_run")
    assert isinstance(run, Setpoint)
    peer = plant_sim.peers["press-1"]
    data = peer.dbs[2]  # type: ignore[attr-defined]
    data[4] = 0b1010_0001
    await driver.write_point(run, 1)
    assert data[4] == 0b1010_1001
    await driver.write_point(run, 0)
    assert data[4] == 0b1010_0001
    assert (await driver.read_points([run]))["motor_run"] == 0


@pytest.mark.parametrize("driver", PLC_IDS, indirect=True)
async def test_offline_plc_fails_within_its_timeout_and_recovers(
    plant_sim: PlantSimulator, driver: PlcDriver
) -> None:
    plc = driver.plc
    await driver.read_points(list(plc.metrics))
    await plant_sim.inject(plc.id, None, "offline")
    try:
        t0 = time.monotonic()
        with pytest.raises(PlcError, match=plc.id):
            await driver.read_points(list(plc.metrics))
        assert time.monotonic() - t0 < 3 * plc.timeout_ms / 1000 + 0.5
    finally:
        await plant_sim.clear(plc.id)
    # The next attempts reconnect (a client may need one attempt to notice the old session died).
    for attempt in range(3):
        try:
            values = await driver.read_points(list(plc.metrics))
            break
        except PlcError:
            if attempt == 2:
                raise
    assert set(values) == {m.name for m in plc.metrics}


async def test_signal_faults_show_in_what_the_driver_reads(plant_sim: PlantSimulator) -> None:
    plc = plant_sim.peers["press-1"].plc
    drv = driver_for(plc)
    try:
        vib = plc.metric("vibration")
        assert vib is not None and vib.baseline is not None
        await plant_sim.inject("press-1", "vibration", "step", 8)
        await plant_sim.peers["press-1"].tick()
        stepped = (await drv.read_points([vib]))["vibration"]
        assert stepped > vib.baseline.mean + 5 * vib.baseline.std
        await plant_sim.inject("press-1", "vibration", "stuck")
        await plant_sim.peers["press-1"].tick()
        first = (await drv.read_points([vib]))["vibration"]
        await plant_sim.peers["press-1"].tick()
        assert (await drv.read_points([vib]))["vibration"] == first
        assert plant_sim.faults()["press-1"] == {"vibration": "stuck +0σ"}
    finally:
        await plant_sim.clear("press-1")
        await drv.close()
    assert plant_sim.faults()["press-1"] == {}


async def test_rtu_device_uses_its_serial_settings(tmp_path: Path) -> None:
    plant, _ = plant_with_free_ports(tmp_path)
    pump = plant.plc("pump-1")
    assert pump is not None and pump.serial_port is not None
    assert pump.serial_port.startswith(str(tmp_path))
    assert pump.baudrate == 115200 and pump.device_id == 3
