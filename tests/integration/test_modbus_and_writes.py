"""Modbus TCP against pymodbus's real server, and the PLC-write activity end to end."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.plc_write import PlcWriteActivities
from dev.simulator.modbus import SimulatedModbusPlc
from factorylm.drivers import PlcError, driver_for
from factorylm.models.plc_writes import PlcWriteInput
from factorylm.plant import Plant
from helpers import plant_with_free_ports

APPROVER = "whatsapp:+15550100001"


@pytest.fixture
async def sim_plant(tmp_path: Path) -> AsyncIterator[tuple[Plant, SimulatedModbusPlc]]:
    plant, _ = plant_with_free_ports(tmp_path)
    sim = SimulatedModbusPlc(plant.plcs[0], seed=3)
    await sim.start()
    yield plant, sim
    await sim.stop()


async def test_driver_reads_decodes_and_scales(sim_plant: tuple[Plant, SimulatedModbusPlc]) -> None:
    plant, sim = sim_plant
    plc = plant.plcs[0]
    driver = driver_for(plc)
    try:
        await sim.tick()
        values = await driver.read_points(list(plc.metrics))
        for metric in plc.metrics:
            assert values[metric.name] == pytest.approx(
                await sim.read(metric.name), abs=metric.scale
            )
        assert values["vibration"] == pytest.approx(2.1, abs=5 * 0.3)  # scaled 0.01 mm/s
        assert values["motor_temp"] == pytest.approx(52.0, abs=5 * 1.5)  # signed, 0.1 °C
    finally:
        await driver.close()


async def test_driver_writes_a_setpoint(sim_plant: tuple[Plant, SimulatedModbusPlc]) -> None:
    plant, sim = sim_plant
    plc = plant.plcs[0]
    setpoint = plc.setpoint("speed_setpoint")
    assert setpoint is not None
    driver = driver_for(plc)
    try:
        await driver.write_point(setpoint, 1234)
        assert await sim.read("speed_setpoint") == 1234
        assert (await driver.read_points([setpoint]))["speed_setpoint"] == 1234
    finally:
        await driver.close()


async def test_driver_names_the_plc_when_it_is_offline(tmp_path: Path) -> None:
    plant, _ = plant_with_free_ports(tmp_path)
    driver = driver_for(plant.plcs[0])
    with pytest.raises(PlcError, match="conveyor-1"):
        await driver.read_points(list(plant.plcs[0].metrics))


async def _write(acts: PlcWriteActivities, req: PlcWriteInput, run_id: str = "run"):  # type: ignore[no-untyped-def]
    env = ActivityEnvironment()
    # As scheduled by the run the request names (the edge looks up that run's approval).
    env.info = dataclasses.replace(env.info, workflow_id=req.workflow_id, workflow_run_id=run_id)
    return await env.run(acts.write_plc_setpoint, req)


async def test_write_is_verified_audited_and_idempotent(
    sim_plant: tuple[Plant, SimulatedModbusPlc], pool: asyncpg.Pool
) -> None:
    plant, sim = sim_plant
    acts = PlcWriteActivities(pool, plant, [APPROVER])
    req = PlcWriteInput(
        action_id="wf-1/run/reduce",
        workflow_id="wf-1",
        action="reduce_motor_speed_to_60pct",
        value=1050,
    )
    try:
        result = await _write(acts, req)
        assert result.verified and result.value_before == 1750 and result.value_read_back == 1050
        assert await sim.read("speed_setpoint") == 1050
        # Someone changes the setpoint by hand; a retry of the same action must not write again.
        await sim._write("speed_setpoint", 1500)
        again = await _write(acts, req)
        assert again == result
        assert await sim.read("speed_setpoint") == 1500
        row = await pool.fetchrow("SELECT * FROM plc_writes WHERE action_id = $1", req.action_id)
        assert row["status"] == "verified" and row["approved_by"] is None
        assert (row["value_before"], row["value_written"], row["value_read_back"]) == (
            1750,
            1050,
            1050,
        )
    finally:
        await acts.close()


async def test_retry_after_a_crash_between_write_and_read_back_does_not_write_twice(
    sim_plant: tuple[Plant, SimulatedModbusPlc], pool: asyncpg.Pool
) -> None:
    plant, sim = sim_plant
    # The state a kill -9 leaves: audit row pending, value already on the PLC.
    await pool.execute(
        """INSERT INTO plc_writes (action_id, workflow_id, action, plc_id, target, approved_by,
               value_before, value_written, status)
           VALUES ('wf-2/run/shutdown', 'wf-2', 'shutdown_motor', 'conveyor-1', 'motor_run',
                   'whatsapp:+15550100001', 1, 0, 'pending')"""
    )
    await sim._write("motor_run", 0)
    # The approval that run recorded before scheduling the write (close_approval).
    await pool.execute(
        """INSERT INTO approval_requests (workflow_id, run_id, code, recipient, action, status,
               answered_by, answered_at)
           VALUES ('wf-2', 'run', '1234', $1, 'shutdown_motor', 'approved', $1, now())""",
        APPROVER,
    )
    writes_seen: list[float] = []
    acts = PlcWriteActivities(pool, plant, [APPROVER])
    driver = acts._driver(plant.plcs[0])
    original = driver.write_point

    async def counting(point, value):  # type: ignore[no-untyped-def]
        writes_seen.append(value)
        await original(point, value)

    driver.write_point = counting  # type: ignore[method-assign]
    try:
        result = await _write(
            acts,
            PlcWriteInput(
                action_id="wf-2/run/shutdown",
                workflow_id="wf-2",
                action="shutdown_motor",
                value=0,
                approved_by="whatsapp:+15550100001",
            ),
        )
    finally:
        await acts.close()
    assert result.verified and result.value_before == 1
    assert writes_seen == []


async def test_read_back_mismatch_is_an_incident_not_a_retry(
    tmp_path: Path, pool: asyncpg.Pool
) -> None:
    plant, _ = plant_with_free_ports(tmp_path)
    plc = plant.plcs[0]

    async def clamp(function_code, start_address, address, count, current, set_values):  # type: ignore[no-untyped-def]
        if set_values is not None and address == 10:
            set_values[0] = 999  # a PLC-side clamp the plant engineer did not tell us about
        return None

    server = ModbusTcpServer(
        SimDevice(
            id=plc.device_id,
            action=clamp,
            simdata=[SimData(0, count=51, values=1750, datatype=DataType.REGISTERS)],
        ),
        address=(plc.host, plc.port or 0),
    )
    await server.serve_forever(background=True)
    acts = PlcWriteActivities(pool, plant, [APPROVER])
    req = PlcWriteInput(
        action_id="wf-3/run/reduce",
        workflow_id="wf-3",
        action="reduce_motor_speed_to_60pct",
        value=1050,
    )
    try:
        with pytest.raises(ApplicationError) as err:
            await _write(acts, req)
        assert err.value.type == "ReadBackMismatch" and err.value.non_retryable
        with pytest.raises(ApplicationError, match="read-back already failed"):
            await _write(acts, req)
    finally:
        await acts.close()
        await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated
    row = await pool.fetchrow("SELECT * FROM plc_writes WHERE action_id = $1", req.action_id)
    assert row["status"] == "mismatch" and row["value_read_back"] == 999
    incident = await pool.fetchval(
        "SELECT body FROM notifications WHERE dedup_key = $1", f"incident/{req.action_id}"
    )
    assert "read back 999" in incident


async def test_out_of_bounds_request_never_reaches_the_plc(
    sim_plant: tuple[Plant, SimulatedModbusPlc], pool: asyncpg.Pool
) -> None:
    plant, sim = sim_plant
    acts = PlcWriteActivities(pool, plant, [APPROVER])
    req = PlcWriteInput(
        action_id="wf-4/run/x", workflow_id="wf-4", action="reduce_motor_speed_to_60pct", value=1700
    )
    with pytest.raises(ApplicationError, match="writes exactly 1050"):
        await _write(acts, req)
    assert await sim.read("speed_setpoint") == 1750
    assert (
        await pool.fetchval("SELECT count(*) FROM plc_writes WHERE action_id = $1", req.action_id)
        == 0
    )
