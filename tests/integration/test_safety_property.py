"""Safety property (the PLC write rules in docs/approvals.md, "The write itself"): whatever is proposed — unknown actions, out-of-bounds or
non-finite values, the wrong PLC, injection strings in every field — no write outside the
catalog or its bounds ever reaches the PLC. 10 000 generated proposals through the real
planning gate and the real PLC-write activity, against a real Modbus peer that records every
write request it receives."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.planning import gate_proposals
from activities.plc_write import PlcWriteActivities
from factorylm.models.drift import DriftAlert, ProposedAction
from factorylm.models.plc_writes import PlcWriteInput
from factorylm.plant import ActionKind, Plant, Policy
from helpers import plant_with_free_ports

APPROVER = "whatsapp:+15550100001"

N = 10_000
NASTY = [
    "'; DROP TABLE plc_writes; --",
    "shutdown_motor; modify_plc_program",
    "../../etc/passwd",
    "shutdown_motor\x00",
    "SHUTDOWN_MOTOR",
    " shutdown_motor",
    "${jndi:ldap://x}",
    "<script>",
    "reduce_motor_speed_to_60pct OR 1=1",
    "modify_plc_program",
    "",
    "🙂",
    "a" * 500,
]


@pytest.fixture
async def recording_plc(tmp_path: Path) -> AsyncIterator[tuple[Plant, list[tuple[int, list[int]]]]]:
    plant, _ = plant_with_free_ports(tmp_path)
    plc = plant.plcs[0]
    writes: list[tuple[int, list[int]]] = []

    async def record(function_code, start_address, address, count, current, set_values):  # type: ignore[no-untyped-def]
        if set_values is not None:
            writes.append((address, [int(v) for v in set_values]))
        return None

    registers = [0] * 51
    registers[10], registers[11] = 1750, 1  # speed setpoint and run command, as at power-up
    server = ModbusTcpServer(
        SimDevice(
            id=plc.device_id,
            action=record,
            simdata=[SimData(0, values=registers, datatype=DataType.REGISTERS)],
        ),
        address=(plc.host, plc.port or 0),
    )
    await server.serve_forever(background=True)
    yield plant, writes
    await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated


def random_value(rng: random.Random) -> float:
    return rng.choice(
        [
            1050.0,
            0.0,
            1.0,
            1750.0,
            1751.0,
            -1.0,
            1e12,
            -1e12,
            math.nan,
            math.inf,
            -math.inf,
            rng.uniform(-5000, 5000),
            1050.0000001,
            float(rng.randint(0, 2000)),
        ]
    )


def random_action(rng: random.Random, plant: Plant) -> str:
    catalog = [a.name for a in plant.actions]
    return rng.choice([*catalog, *catalog, *NASTY, f"act_{rng.randint(0, 99)}"])


def random_request(rng: random.Random, plant: Plant) -> PlcWriteInput:
    fields: dict[str, object] = {
        "action_id": f"prop-{uuid.uuid4().hex}",
        "workflow_id": rng.choice(["wf", *NASTY]),
        "action": random_action(rng, plant),
        "value": random_value(rng),
        "approved_by": rng.choice([None, APPROVER, *NASTY[:3]]),
    }
    if rng.random() < 1 / 3:
        action = rng.choice([a for a in plant.actions if a.kind is ActionKind.PLC_WRITE])
        fields.update(
            workflow_id="wf", action=action.name, value=action.value, approved_by=APPROVER
        )
        if rng.random() < 0.5:
            bent = rng.choice(["action", "value", "approved_by", "workflow_id"])
            fields[bent] = {
                "action": random_action(rng, plant),
                "value": random_value(rng),
                "approved_by": rng.choice([None, "whatsapp:+19990000000", *NASTY]),
                "workflow_id": rng.choice(NASTY),
            }[bent]
    return PlcWriteInput.model_validate(fields)


async def test_no_generated_proposal_writes_outside_the_catalog(
    recording_plc: tuple[Plant, list[tuple[int, list[int]]]], pool: asyncpg.Pool
) -> None:
    plant, writes = recording_plc
    rng = random.Random(20261120)
    acts = PlcWriteActivities(pool, plant, [APPROVER])
    env = ActivityEnvironment()
    refused = accepted = 0
    plcs = ["conveyor-1", "press-1", "conveyor-2", *NASTY[:4]]
    metrics = ["vibration", "motor_temp", "current", "motor_speed", *NASTY[:3]]
    try:
        for _ in range(N):
            # Layer 1: the planning gate between the agents and the machine.
            now = datetime.now(UTC)
            alert = DriftAlert(
                plc_id=rng.choice(plcs),
                vendor=rng.choice(["siemens_s7", *NASTY]),
                metric=rng.choice(metrics),
                sigma=rng.uniform(-9, 9),
                window_mean=0,
                window_count=5,
                window_seconds=60,
                baseline_mean=0,
                baseline_std=1,
                sample_time=now,
                detected_at=now,
            )
            suggested = [
                ProposedAction(action=random_action(rng, plant), reason=rng.choice(NASTY))
                for _ in range(rng.randint(0, 3))
            ]
            gated = gate_proposals(plant, alert, suggested)
            if gated is not None:
                action = plant.action(gated.action)
                assert action is not None, gated
                assert action.plc in (None, alert.plc_id) and alert.metric in action.metrics
                assert action.min_sigma <= abs(alert.sigma)
            # Layer 2: the edge's write activity, given anything at all — a third of the time a
            # catalog write with one field possibly bent, so the allowed path is exercised too.
            req = random_request(rng, plant)
            try:
                await env.run(acts.write_plc_setpoint, req)
                accepted += 1
            except ApplicationError as err:
                assert err.non_retryable and err.type in (
                    "ActionNotInCatalog",
                    "ValueOutOfBounds",
                    "ApprovalMissing",
                    "MalformedRequest",
                ), err
                refused += 1
    finally:
        await acts.close()

    plc = plant.plcs[0]  # the recording PLC; the other PLCs' catalog writes need an approval
    allowed: set[tuple[int, int]] = set()
    for action in plant.actions:
        if (
            action.kind is ActionKind.PLC_WRITE
            and action.policy is not Policy.NEVER
            and action.plc == plc.id
        ):
            setpoint = plc.setpoint(action.setpoint or "")
            assert (
                setpoint is not None and setpoint.address is not None and action.value is not None
            )
            allowed.add((setpoint.address, round(action.value / setpoint.scale)))
    assert accepted > 100 and refused > 5000  # both sides of the rules were exercised
    assert len(writes) == accepted  # every accepted proposal wrote exactly once...
    for address, values in writes:  # ...and only catalog values to catalog registers
        assert (address, values[0]) in allowed, (address, values)
    audited = await pool.fetch(
        "SELECT action, value_written, status, value_read_back FROM plc_writes"
        " WHERE action_id LIKE 'prop-%'"
    )
    written = [r for r in audited if r["status"] != "refused"]
    assert len(written) == accepted and all(r["status"] == "verified" for r in written)
    # Refusals after the catalog check (no approval on record) are audited, and never wrote.
    refused_rows = [r for r in audited if r["status"] == "refused"]
    assert refused_rows and all(r["value_read_back"] is None for r in refused_rows)
    # Only the catalog's writes are audited; the other PLCs' (approval-only) were refused.
    catalog_writes = {a.name for a in plant.actions if a.kind is ActionKind.PLC_WRITE}
    assert {r["action"] for r in audited} <= catalog_writes
    assert {r["action"] for r in written} <= {"reduce_motor_speed_to_60pct", "shutdown_motor"}
