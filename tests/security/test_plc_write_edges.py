"""Finding 9: the edges of a PLC write — float read-back, S7 bool bits, failures in the audit
trail, and one action id for one value.

The real PLC-write activity (activities/plc_write.py) against the real database and real
protocol peers: python-snap7's S7 server (dev/simulator) with a "PLC program" hooked into its
request handling, and pymodbus's server with one that fails requests.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from snap7.server import EVC_DATA_READ, EVC_DATA_WRITE
from snap7.type import SrvEvent
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.plc_write import PlcWriteActivities
from dev.simulator.s7 import SimulatedS7Plc
from factorylm.drivers import PlcError
from factorylm.models.plc_writes import PlcWriteInput, PlcWriteResult
from factorylm.plant import Plant
from helpers import free_port, plant_with_free_ports

SETPOINT_DB, SPEED_AT, RUN_AT, RUN_BIT, OTHER_BIT = 2, 0, 4, 3, 5
SPEED = 10  # conveyor-1's speed setpoint register

S7_PLANT = {
    "plcs": [
        {
            "id": "press-9",
            "vendor": "siemens_s7",
            "protocol": "s7",
            "poll_interval_ms": 1000,
            "metrics": [{"name": "motor_temp", "db": 1, "offset": 0, "type": "real"}],
            "setpoints": [
                {"name": "speed_ref", "db": SETPOINT_DB, "offset": SPEED_AT, "type": "real",
                 "min": 0, "max": 100},
                {"name": "run", "db": SETPOINT_DB, "offset": RUN_AT, "bit": RUN_BIT,
                 "type": "bool", "min": 0, "max": 1},
            ],
        }
    ],
    "actions": [
        {"name": "slow_press_to_10pct", "description": "Press speed to 10 %", "kind": "plc_write",
         "policy": "auto", "plc": "press-9", "setpoint": "speed_ref", "value": 10.0},
        {"name": "stop_press", "description": "Stop the press", "kind": "plc_write",
         "policy": "auto", "plc": "press-9", "setpoint": "run", "value": 0},
    ],
}  # fmt: skip


async def run(acts: PlcWriteActivities, req: PlcWriteInput) -> PlcWriteResult:
    result: PlcWriteResult = await ActivityEnvironment().run(acts.write_plc_setpoint, req)
    return result


def write(action_id: str, action: str, value: float) -> PlcWriteInput:
    return PlcWriteInput(action_id=action_id, workflow_id="wf-edges", action=action, value=value)


@pytest.fixture
async def press() -> AsyncIterator[tuple[Plant, SimulatedS7Plc]]:
    raw: dict[str, Any] = yaml.safe_load(yaml.safe_dump(S7_PLANT))
    raw["plcs"][0]["port"] = free_port()
    plant = Plant.model_validate(raw)
    sim = SimulatedS7Plc(plant.plcs[0], seed=9)
    await sim.start()  # setpoints power up at their maximum: speed 100, run on
    yield plant, sim
    await sim.stop()


Program = Callable[[int, int, list[int], list[int] | None], Awaitable[ExcCodes | None]]


@pytest.fixture
async def conveyor(
    tmp_path: Path,
) -> AsyncIterator[Callable[[Program], Awaitable[Plant]]]:
    """conveyor-1 on a pymodbus server running the given PLC program on every request."""
    servers: list[ModbusTcpServer] = []

    async def serve(program: Program) -> Plant:
        _, path = plant_with_free_ports(tmp_path)
        raw = yaml.safe_load(path.read_text())
        raw["actions"].append(
            {"name": "reduce_motor_speed_to_80pct", "description": "Conveyor to 1400 rpm",
             "kind": "plc_write", "policy": "auto", "plc": "conveyor-1",
             "setpoint": "speed_setpoint", "value": 1400}
        )  # fmt: skip
        plant = Plant.model_validate(raw)
        plc = plant.plcs[0]

        async def action(function_code, start_address, address, count, current, set_values):  # type: ignore[no-untyped-def]
            return await program(address, start_address, current, set_values)

        registers = [0] * 51
        registers[SPEED], registers[SPEED + 1] = 1750, 1
        server = ModbusTcpServer(
            SimDevice(
                id=plc.device_id,
                action=action,
                simdata=[SimData(0, values=registers, datatype=DataType.REGISTERS)],
            ),
            address=(plc.host, plc.port or 0),
        )
        await server.serve_forever(background=True)
        servers.append(server)
        return plant

    yield serve
    for server in servers:
        await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated


async def audit(pool: asyncpg.Pool, action_id: str) -> asyncpg.Record:
    row: asyncpg.Record = await pool.fetchrow(
        "SELECT * FROM plc_writes WHERE action_id = $1", action_id
    )
    return row


async def test_a_real_setpoint_read_back_off_by_more_than_float_rounding_is_a_mismatch(
    press: tuple[Plant, SimulatedS7Plc], pool: asyncpg.Pool
) -> None:
    plant, sim = press

    def plc_program(event: SrvEvent) -> None:
        # The CPU clamps the new speed reference to 9.6 (a limit nobody wrote down).
        if event.EvtCode == EVC_DATA_WRITE and event.EvtParam2 == SETPOINT_DB:
            if event.EvtParam3 == SPEED_AT:
                sim.dbs[SETPOINT_DB][SPEED_AT : SPEED_AT + 4] = struct.pack(">f", 9.6)

    sim._server.set_events_callback(plc_program)
    acts = PlcWriteActivities(pool, plant, [])
    try:
        with pytest.raises(ApplicationError) as err:
            await run(acts, write("edges-real", "slow_press_to_10pct", 10.0))
    finally:
        await acts.close()
    assert err.value.type == "ReadBackMismatch" and err.value.non_retryable
    row = await audit(pool, "edges-real")
    assert row["status"] == "mismatch" and row["value_read_back"] == pytest.approx(9.6)


async def test_an_s7_bool_write_changes_only_its_own_bit(
    press: tuple[Plant, SimulatedS7Plc], pool: asyncpg.Pool
) -> None:
    plant, sim = press
    byte = sim.dbs[SETPOINT_DB]
    assert byte[RUN_AT] == 1 << RUN_BIT  # running, the other bits clear
    flips = 0

    def plc_program(event: SrvEvent) -> None:
        # The PLC's own program toggles another bit of the same byte (say a "door open"
        # flag) right after every read of that byte: between the edge's read of it and
        # whatever the edge writes next.
        nonlocal flips
        if (event.EvtCode, event.EvtParam2, event.EvtParam3) == (
            EVC_DATA_READ,
            SETPOINT_DB,
            RUN_AT,
        ):
            byte[RUN_AT] ^= 1 << OTHER_BIT
            flips += 1

    sim._server.set_events_callback(plc_program)
    acts = PlcWriteActivities(pool, plant, [])
    try:
        result = await run(acts, write("edges-bool", "stop_press", 0))
    finally:
        await acts.close()
    assert result.verified and result.value_before == 1 and result.value_read_back == 0
    assert flips >= 2  # the value before and the read-back, at least
    assert byte[RUN_AT] & (1 << RUN_BIT) == 0  # stopped
    # The other bit is exactly what the PLC's program made it: the write put back nothing.
    assert bool(byte[RUN_AT] & (1 << OTHER_BIT)) == (flips % 2 == 1)


async def test_a_failed_write_is_audited_as_failed_with_its_error(
    conveyor: Callable[[Program], Awaitable[Plant]], pool: asyncpg.Pool
) -> None:
    async def refuses_writes(
        address: int, start: int, current: list[int], values: list[int] | None
    ) -> ExcCodes | None:
        return ExcCodes.DEVICE_FAILURE if values is not None else None

    plant = await conveyor(refuses_writes)
    acts = PlcWriteActivities(pool, plant, [])
    try:
        with pytest.raises(PlcError):
            await run(acts, write("edges-failed", "reduce_motor_speed_to_60pct", 1050))
    finally:
        await acts.close()
    row = await audit(pool, "edges-failed")
    assert row["status"] == "failed" and row["value_before"] == 1750
    assert "write" in row["error"] and "conveyor-1" in row["error"]
    assert row["completed_at"] is not None and row["value_read_back"] is None


async def test_a_failed_read_before_the_write_leaves_an_audit_row(
    conveyor: Callable[[Program], Awaitable[Plant]], pool: asyncpg.Pool
) -> None:
    writes: list[list[int]] = []

    async def refuses_reads(
        address: int, start: int, current: list[int], values: list[int] | None
    ) -> ExcCodes | None:
        if values is None:
            return ExcCodes.DEVICE_FAILURE
        writes.append(list(values))
        return None

    plant = await conveyor(refuses_reads)
    acts = PlcWriteActivities(pool, plant, [])
    try:
        with pytest.raises(PlcError):
            await run(acts, write("edges-noread", "reduce_motor_speed_to_60pct", 1050))
    finally:
        await acts.close()
    assert writes == []  # nothing written without the value before
    row = await audit(pool, "edges-noread")
    assert row is not None, "the failed attempt left no audit row"
    assert row["status"] == "failed" and row["value_before"] is None
    assert "read before write" in row["error"]


async def test_a_retry_with_a_different_value_under_the_same_action_id_is_refused(
    conveyor: Callable[[Program], Awaitable[Plant]], pool: asyncpg.Pool
) -> None:
    writes: list[list[int]] = []

    async def first_write_fails(
        address: int, start: int, current: list[int], values: list[int] | None
    ) -> ExcCodes | None:
        if values is None or address != SPEED:
            return None
        writes.append(list(values))
        return ExcCodes.DEVICE_FAILURE if len(writes) == 1 else None

    plant = await conveyor(first_write_fails)
    acts = PlcWriteActivities(pool, plant, [])
    try:
        with pytest.raises(PlcError):
            await run(acts, write("edges-reused", "reduce_motor_speed_to_60pct", 1050))
        # The retry under that id now asks for another catalog value on the same setpoint.
        with pytest.raises(ApplicationError) as err:
            await run(acts, write("edges-reused", "reduce_motor_speed_to_80pct", 1400))
    finally:
        await acts.close()
    assert err.value.type == "ActionIdReused" and err.value.non_retryable
    assert writes == [[1050]]  # only the first attempt reached the PLC
    row = await audit(pool, "edges-reused")
    assert row["action"] == "reduce_motor_speed_to_60pct" and row["value_written"] == 1050
