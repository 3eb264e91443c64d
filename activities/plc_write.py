"""PLC writes: the only path from a decision to a machine (the safety rules in docs/approvals.md, "The write itself").

Runs on the edge worker's task queue. The catalog and bounds are checked here, against the
edge's own plant file, before any I/O — whatever the workflow asked. Each action id writes
at most once; the value is read back and compared; every attempt is audited in `plc_writes`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Collection

import asyncpg
from temporalio import activity

from factorylm.drivers import PlcDriver, driver_for
from factorylm.errors import (
    ACTION_NOT_IN_CATALOG,
    APPROVAL_MISSING,
    MALFORMED_REQUEST,
    READ_BACK_MISMATCH,
    VALUE_OUT_OF_BOUNDS,
    non_retryable,
)
from factorylm.models.plc_writes import PlcWriteInput, PlcWriteResult
from factorylm.plant import ActionKind, Plant, Plc, Policy, Setpoint

log = logging.getLogger(__name__)


def validate_write(
    plant: Plant, req: PlcWriteInput, approvers: Collection[str]
) -> tuple[Plc, Setpoint]:
    """Raise a non-retryable error unless the request is a catalog write within bounds,
    approved by an authorised person when its policy says so."""
    for name, text in (
        ("action_id", req.action_id),
        ("workflow_id", req.workflow_id),
        ("approved_by", req.approved_by or ""),
    ):
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise non_retryable(MALFORMED_REQUEST, f"{name} contains control characters")
    action = plant.action(req.action)
    if action is None or action.kind is not ActionKind.PLC_WRITE:
        raise non_retryable(ACTION_NOT_IN_CATALOG, f"{req.action!r} is not a catalog PLC write")
    if action.policy is Policy.NEVER:
        raise non_retryable(ACTION_NOT_IN_CATALOG, f"{action.name} has policy 'never'")
    if action.policy is Policy.APPROVAL and req.approved_by not in approvers:
        # The edge checks the approver itself: a workflow bug must not be enough to write.
        raise non_retryable(
            APPROVAL_MISSING, f"{action.name} needs an approval from an authorised approver"
        )
    assert action.plc is not None and action.setpoint is not None
    plc = plant.plc(action.plc)
    setpoint = plc.setpoint(action.setpoint) if plc else None
    if plc is None or setpoint is None:
        raise non_retryable(ACTION_NOT_IN_CATALOG, f"{action.name}: target not in the plant file")
    if not math.isfinite(req.value) or not setpoint.min <= req.value <= setpoint.max:
        raise non_retryable(
            VALUE_OUT_OF_BOUNDS,
            f"{action.name}: {req.value} outside {setpoint.name} [{setpoint.min}, {setpoint.max}]",
        )
    if action.value is not None and req.value != action.value:
        raise non_retryable(
            VALUE_OUT_OF_BOUNDS, f"{action.name} writes exactly {action.value}, not {req.value}"
        )
    return plc, setpoint


def same_value(setpoint: Setpoint, a: float, b: float) -> bool:
    if setpoint.type == "f32":
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return abs(a - b) <= abs(setpoint.scale) / 2  # integer registers hold value/scale


class PlcWriteActivities:
    def __init__(self, pool: asyncpg.Pool, plant: Plant, approvers: Collection[str]) -> None:
        self._pool = pool
        self._plant = plant
        self._approvers = frozenset(approvers)
        self._drivers: dict[str, PlcDriver] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _driver(self, plc: Plc) -> PlcDriver:
        if plc.id not in self._drivers:
            self._drivers[plc.id] = driver_for(plc)
        return self._drivers[plc.id]

    async def close(self) -> None:
        for driver in self._drivers.values():
            await driver.close()

    @activity.defn(name="write_plc_setpoint")
    async def write_plc_setpoint(self, req: PlcWriteInput) -> PlcWriteResult:
        plc, setpoint = validate_write(self._plant, req, self._approvers)
        lock = self._locks.setdefault(plc.id, asyncio.Lock())
        async with lock:
            return await self._write(req, plc, setpoint)

    async def _write(self, req: PlcWriteInput, plc: Plc, setpoint: Setpoint) -> PlcWriteResult:
        row = await self._pool.fetchrow(
            "SELECT * FROM plc_writes WHERE action_id = $1", req.action_id
        )
        if row is not None and row["status"] == "verified":
            return self._result(row, req, plc, setpoint)
        if row is not None and row["status"] == "mismatch":
            raise non_retryable(READ_BACK_MISMATCH, f"{req.action_id}: read-back already failed")
        driver = self._driver(plc)
        activity.heartbeat("reading the value before")
        current = (await driver.read_points([setpoint]))[setpoint.name]
        already_written = False
        if row is None:
            await self._pool.execute(
                """INSERT INTO plc_writes (action_id, workflow_id, action, plc_id, target,
                       approved_by, value_before, value_written, status)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending')""",
                req.action_id,
                req.workflow_id,
                req.action,
                plc.id,
                setpoint.name,
                req.approved_by,
                current,
                req.value,
            )
        else:
            # A previous attempt died between write and read-back: if the value is already
            # there the write landed, and writing it again would be a second write.
            already_written = same_value(setpoint, current, req.value)
        if not already_written:
            activity.heartbeat("writing")
            await driver.write_point(setpoint, req.value)
        activity.heartbeat("reading back")
        read_back = (await driver.read_points([setpoint]))[setpoint.name]
        verified = same_value(setpoint, read_back, req.value)
        row = await self._pool.fetchrow(
            """UPDATE plc_writes SET value_read_back = $2, status = $3, completed_at = now()
               WHERE action_id = $1 RETURNING *""",
            req.action_id,
            read_back,
            "verified" if verified else "mismatch",
        )
        if not verified:
            log.error(
                "INCIDENT %s: wrote %s to %s.%s, read back %s",
                req.action_id,
                req.value,
                plc.id,
                setpoint.name,
                read_back,
            )
            await self._pool.execute(
                """INSERT INTO notifications (dedup_key, channel, recipient, body, workflow_id)
                   VALUES ($1, 'log', 'incident', $2, $3) ON CONFLICT DO NOTHING""",
                f"incident/{req.action_id}",
                f"PLC write incident: {req.action} wrote {req.value} to {plc.id}.{setpoint.name}"
                f" but read back {read_back}. Check the machine before any further action.",
                req.workflow_id,
            )
            raise non_retryable(
                READ_BACK_MISMATCH,
                f"{plc.id}.{setpoint.name}: wrote {req.value}, read back {read_back}",
            )
        return self._result(row, req, plc, setpoint)

    @staticmethod
    def _result(
        row: asyncpg.Record, req: PlcWriteInput, plc: Plc, setpoint: Setpoint
    ) -> PlcWriteResult:
        return PlcWriteResult(
            action_id=req.action_id,
            plc_id=plc.id,
            setpoint=setpoint.name,
            value_before=row["value_before"],
            value_written=row["value_written"],
            value_read_back=row["value_read_back"],
            verified=row["status"] == "verified",
        )
