"""PLC writes: the only path from a decision to a machine (the safety rules in docs/approvals.md, "The write itself").

Runs on the edge worker's task queue. The catalog and bounds are checked here, against the
edge's own plant file, before any I/O — whatever the workflow asked; an `approval` action
also needs the approval on record in PostgreSQL for the run that scheduled it, still within
its validity. Each action id writes at most once, one value; the value is read back and
compared; every attempt is audited in `plc_writes`, refusals and failures included.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Collection

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from factorylm.drivers import PlcDriver, PlcError, driver_for
from factorylm.errors import (
    ACTION_ID_REUSED,
    ACTION_NOT_IN_CATALOG,
    APPROVAL_EXPIRED,
    APPROVAL_MISSING,
    MALFORMED_REQUEST,
    PLC_VALUE_CHANGED,
    READ_BACK_MISMATCH,
    VALUE_OUT_OF_BOUNDS,
    WRONG_SITE,
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
    # The edge's plant is its one site (workers/plc_edge.py): another site's action is unknown.
    action = plant.action(req.action, plant.only_site.name)
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


_FLOAT_TYPES = frozenset({"f32", "real", "float", "double"})  # OPC UA: float, double


def same_value(setpoint: Setpoint, a: float, b: float) -> bool:
    """Whether a read value is the value meant. A float point (Modbus f32, S7/Logix REAL)
    holds what was written up to its float32 rounding, so anything further off is a
    different value — a PLC clamping 10.0 to 9.6 must not pass as verified. An integer
    register holds value/scale, so half a step either way is the same value."""
    if setpoint.type in _FLOAT_TYPES:
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return abs(a - b) <= abs(setpoint.scale) / 2


# One row per action id, whatever happened to it. A row that was only refused never reached
# the PLC, so a later request under its id replaces it; otherwise the first attempt's
# description (and value before) stays.
_AUDIT = """
INSERT INTO plc_writes (action_id, workflow_id, action, plc_id, target, approved_by,
                        value_written, status, error, value_before, completed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
        CASE WHEN $8 = 'pending' THEN NULL ELSE now() END)
ON CONFLICT (action_id) DO UPDATE SET
    workflow_id = EXCLUDED.workflow_id, action = EXCLUDED.action, plc_id = EXCLUDED.plc_id,
    target = EXCLUDED.target, approved_by = EXCLUDED.approved_by,
    value_written = EXCLUDED.value_written, status = EXCLUDED.status,
    value_before = COALESCE(EXCLUDED.value_before, plc_writes.value_before),
    error = COALESCE(EXCLUDED.error, plc_writes.error), completed_at = EXCLUDED.completed_at
"""

# The approval the workflow recorded (activities/notify.py close_approval) for the very run
# that scheduled this write: the edge does not take the approver's name on trust.
_APPROVAL = """
SELECT answered_at, answered_at >= now() - $5 * interval '1 second' AS valid
FROM approval_requests
WHERE workflow_id = $1 AND run_id = $2 AND action = $3 AND status = 'approved'
  AND answered_by = $4 AND answered_at IS NOT NULL
ORDER BY answered_at DESC LIMIT 1
"""


class PlcWriteActivities:
    def __init__(
        self,
        pool: asyncpg.Pool,
        plant: Plant,
        approvers: Collection[str],
        *,
        approval_validity_s: float = 600.0,
    ) -> None:
        self._pool = pool
        self._plant = plant
        self._approvers = frozenset(approvers)
        self._approval_validity_s = approval_validity_s
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
        site = self._plant.only_site.name  # an edge serves one site (workers/plc_edge.py)
        if req.site and req.site != site:
            # A write for another site on this site's queue: a misrouted or forged task.
            # Refused before the catalog is consulted, and audited (no PLC of this site is
            # named: the action is from a catalog this edge does not hold).
            reason = f"this edge serves site {site}; {req.action!r} is for site {req.site}"
            log.error("PLC write %s refused: %s", req.action_id, reason)
            await self._pool.execute(
                _AUDIT, req.action_id, req.workflow_id, req.action, "", "", req.approved_by,
                req.value if math.isfinite(req.value) else 0.0, "refused",
                f"{WRONG_SITE}: {reason}", None,
            )  # fmt: skip
            raise non_retryable(WRONG_SITE, reason)
        plc, setpoint = validate_write(self._plant, req, self._approvers)
        lock = self._locks.setdefault(plc.id, asyncio.Lock())
        async with lock:
            return await self._write(req, plc, setpoint)

    async def _audit(
        self,
        req: PlcWriteInput,
        plc: Plc,
        setpoint: Setpoint,
        status: str,
        error: str | None,
        value_before: float | None = None,
    ) -> None:
        await self._pool.execute(
            _AUDIT,
            req.action_id,
            req.workflow_id,
            req.action,
            plc.id,
            setpoint.name,
            req.approved_by,
            req.value,
            status,
            error,
            value_before,
        )

    async def _refuse(
        self, req: PlcWriteInput, plc: Plc, setpoint: Setpoint, kind: str, reason: str
    ) -> ApplicationError:
        log.error("PLC write %s refused: %s", req.action_id, reason)
        await self._audit(req, plc, setpoint, "refused", f"{kind}: {reason}")
        return non_retryable(kind, reason)

    async def _check_approval(self, req: PlcWriteInput, plc: Plc, setpoint: Setpoint) -> None:
        """For an `approval` action: the approval on record for the run that scheduled this
        write, by the approver it names, given no longer ago than its validity."""
        action = self._plant.action(req.action, self._plant.only_site.name)
        if action is None or action.policy is not Policy.APPROVAL:
            return
        info = activity.info()
        # Temporal says which run scheduled the activity; the request's own fields are only
        # what that run (or whoever reached the task queue) chose to write into it.
        if req.workflow_id != info.workflow_id:
            raise await self._refuse(
                req,
                plc,
                setpoint,
                APPROVAL_MISSING,
                f"the request names workflow {req.workflow_id!r} "
                f"but was scheduled by {info.workflow_id!r}",
            )
        row = await self._pool.fetchrow(
            _APPROVAL,
            info.workflow_id,
            info.workflow_run_id,
            action.name,
            req.approved_by,
            self._approval_validity_s,
        )
        if row is None:
            raise await self._refuse(
                req,
                plc,
                setpoint,
                APPROVAL_MISSING,
                f"no approval of {action.name} by {req.approved_by} on record "
                f"for run {info.workflow_run_id} of {info.workflow_id}",
            )
        if not row["valid"]:
            raise await self._refuse(
                req,
                plc,
                setpoint,
                APPROVAL_EXPIRED,
                f"{action.name} was approved at {row['answered_at']:%Y-%m-%d %H:%M:%S} UTC; "
                f"an approval is valid for {self._approval_validity_s:g} s",
            )

    async def _write(self, req: PlcWriteInput, plc: Plc, setpoint: Setpoint) -> PlcWriteResult:
        row = await self._pool.fetchrow(
            "SELECT * FROM plc_writes WHERE action_id = $1", req.action_id
        )
        if row is not None and row["status"] == "refused":
            row = None  # never reached the PLC: this request starts afresh under the id
        if row is not None:
            if (row["action"], row["plc_id"], row["target"]) != (
                req.action,
                plc.id,
                setpoint.name,
            ) or not same_value(setpoint, row["value_written"], req.value):
                # An id is one decision. Its audit row stays as it is.
                log.error(
                    "PLC write %s refused: the id already wrote %s (%s); asked for %s (%s)",
                    req.action_id,
                    row["value_written"],
                    row["action"],
                    req.value,
                    req.action,
                )
                raise non_retryable(
                    ACTION_ID_REUSED,
                    f"{req.action_id} is already the write of {row['value_written']:g} "
                    f"({row['action']} to {row['plc_id']}.{row['target']}); "
                    f"refusing {req.value:g} ({req.action}) under the same id",
                )
            if row["status"] == "verified":
                return self._result(row, req, plc, setpoint)
            if row["status"] == "mismatch":
                raise non_retryable(
                    READ_BACK_MISMATCH, f"{req.action_id}: read-back already failed"
                )
        await self._check_approval(req, plc, setpoint)
        driver = self._driver(plc)
        activity.heartbeat("reading the value before")
        try:
            current = (await driver.read_points([setpoint]))[setpoint.name]
        except PlcError as exc:
            await self._audit(req, plc, setpoint, "failed", f"read before write: {exc}")
            raise
        first_attempt = row is None or row["value_before"] is None
        already_written = False
        if first_attempt:
            await self._audit(req, plc, setpoint, "pending", None, value_before=current)
        else:
            assert row is not None
            # A previous attempt got as far as reading the value. If the value meant is
            # there now, its write landed (and writing again would be a second write); if
            # the value is neither that nor what it was, someone else changed it since.
            already_written = same_value(setpoint, current, req.value)
            if not already_written and not same_value(setpoint, current, row["value_before"]):
                await self._changed_since(req, plc, setpoint, row["value_before"], current)
        if not already_written:
            activity.heartbeat("writing")
            try:
                await driver.write_point(setpoint, req.value)
            except PlcError as exc:
                await self._audit(req, plc, setpoint, "failed", f"write: {exc}")
                raise
        activity.heartbeat("reading back")
        try:
            read_back = (await driver.read_points([setpoint]))[setpoint.name]
        except PlcError as exc:
            await self._audit(req, plc, setpoint, "failed", f"read back: {exc}")
            raise
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
            await self._incident(
                req,
                f"PLC write incident: {req.action} wrote {req.value} to {plc.id}.{setpoint.name}"
                f" but read back {read_back}. Check the machine before any further action.",
            )
            raise non_retryable(
                READ_BACK_MISMATCH,
                f"{plc.id}.{setpoint.name}: wrote {req.value}, read back {read_back}",
            )
        return self._result(row, req, plc, setpoint)

    async def _changed_since(
        self, req: PlcWriteInput, plc: Plc, setpoint: Setpoint, before: float, now: float
    ) -> None:
        reason = (
            f"{plc.id}.{setpoint.name} was {before:g} when this write was first tried and is "
            f"{now:g} now: someone else changed it; not rewritten"
        )
        log.error("PLC write %s stopped: %s", req.action_id, reason)
        await self._audit(req, plc, setpoint, "failed", f"{PLC_VALUE_CHANGED}: {reason}")
        await self._incident(
            req,
            f"PLC write stopped: {req.action} was retried, but {reason}. "
            "Decide again with the machine's current state.",
        )
        raise non_retryable(PLC_VALUE_CHANGED, reason)

    async def _incident(self, req: PlcWriteInput, body: str) -> None:
        await self._pool.execute(
            """INSERT INTO notifications (dedup_key, channel, recipient, body, workflow_id)
               VALUES ($1, 'log', 'incident', $2, $3) ON CONFLICT DO NOTHING""",
            f"incident/{req.action_id}",
            body,
            req.workflow_id,
        )

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
