"""The operator endpoints: approvals until WhatsApp replies arrive, work orders, baselines,
collector status, and the unauthenticated health check for load balancers.

The approval endpoint is how a person's decision reaches a waiting workflow besides the Twilio
webhook; both end in the workflow's `decide` update.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.cmms import work_order_label
from api.auth import APPROVE, READ, AccessGuard, client_of
from factorylm.models.approvals import ApprovalDecision
from factorylm.roster import central_approver_addresses
from factorylm.settings import Settings
from workflows.drift_response import DriftResponseWorkflow

log = logging.getLogger(__name__)

# A decision waits for the workflow's worker to accept it; a dead worker must not hold the
# request (and, through it, the API's shutdown) forever.
UPDATE_TIMEOUT_S = 10.0

# WO- (the built-in store) or ATLAS- (Atlas CMMS, as the work-order activity names them) and up
# to 18 ASCII digits: below int64's range, and no "²" that str.isdigit() accepts.
_WORK_ORDER_ID = re.compile(r"^(?:(?P<system>WO|ATLAS)-)?(?P<digits>[0-9]{1,18})$")


class ApprovalBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: bool
    code: str = Field(pattern=r"^[0-9]{4}$", description="the code in the request message")
    approver: str | None = None  # optional; must be the token's own approver when given


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class OperatorRoutes:
    def __init__(self, settings: Settings, client: Client, pool: asyncpg.Pool) -> None:
        self._settings = settings
        self._client = client
        self._pool = pool
        # Every site's approvers; the workflow then checks the one its request was sent to.
        self._approvers = central_approver_addresses(settings)

    async def health(self, request: Request) -> JSONResponse:
        """Unauthenticated (for load balancers): it says what is down, never why — the error
        text (hosts, users, versions) goes to the log for the operator."""
        parts: dict[str, str] = {}
        try:
            await self._pool.fetchval("SELECT 1")
            parts["database"] = "ok"
        except Exception as exc:  # any failure is "unreachable" to a load balancer
            log.warning("health: database unreachable: %s", exc)
            parts["database"] = "unreachable"
        try:
            await self._client.service_client.check_health()
            parts["temporal"] = "ok"
        except RPCError as exc:
            log.warning("health: Temporal unreachable: %s", exc)
            parts["temporal"] = "unreachable"
        ok = all(v == "ok" for v in parts.values())
        return JSONResponse({"status": "ok" if ok else "degraded", **parts}, 200 if ok else 503)

    async def approve(self, request: Request) -> JSONResponse:
        """The decision is made as the approver the token is bound to, never as whoever the
        body names, and only with the request's code (what the approver was sent)."""
        workflow_id = request.path_params["workflow_id"]
        client = client_of(request)
        try:
            body = ApprovalBody.model_validate(json.loads(await request.body() or b"{}"))
        except json.JSONDecodeError as exc:
            return error(400, f"body is not JSON: {exc.msg}")
        except UnicodeDecodeError:
            return error(400, "body is not JSON: not UTF-8 text")
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) + ": " + e["msg"] for e in exc.errors())
            return error(422, f'expected {{approve: bool, code: "1234"}}; {fields}')
        approver = client.approver
        if approver is None:
            return error(403, f"token {client.name!r} is not bound to an approver")
        if body.approver is not None and body.approver != approver:
            log.warning(
                "token %r (approver %r) tried to decide as %r on %r",
                client.name,
                approver,
                body.approver,
                workflow_id,
            )
            return error(403, f"this token decides as {approver}, not as {body.approver}")
        if approver not in self._approvers:
            log.warning("refused decision from unauthorised %r on %r", approver, workflow_id)
            return error(403, f"{approver} is not an authorised approver")
        decision = ApprovalDecision(approve=body.approve, approver=approver, code=body.code)
        handle = self._client.get_workflow_handle(workflow_id)
        try:
            outcome = await asyncio.wait_for(
                handle.execute_update(DriftResponseWorkflow.decide, decision), UPDATE_TIMEOUT_S
            )
        except TimeoutError:
            return error(
                504,
                f"{workflow_id} did not answer within {UPDATE_TIMEOUT_S:g} s (its worker may be "
                "down); the decision may still arrive: check the workflow before sending it again",
            )
        except WorkflowUpdateFailedError as exc:
            reason = str(exc.cause) if exc.cause else str(exc)
            return error(409, reason)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return error(404, f"no running workflow {workflow_id}")
            raise
        log.info("%r %s %r", decision.approver, outcome, workflow_id)
        return JSONResponse({"workflow_id": workflow_id, "decision": outcome})

    async def work_order(self, request: Request) -> JSONResponse:
        label = request.path_params["wo_id"]
        match = _WORK_ORDER_ID.match(label)
        if match is None:
            return error(
                400, f"work order ids look like WO-000123 or ATLAS-123, not {label[:40]!r}"
            )
        digits = match["digits"]
        if match["system"] == "ATLAS":
            return await self._atlas_work_order(label, digits)
        row = await self._pool.fetchrow("SELECT * FROM work_orders WHERE id = $1", int(digits))
        if row is None:
            return error(404, f"no work order {label}")
        return JSONResponse(
            {
                "id": work_order_label(row["id"]),
                "title": row["title"],
                "description": row["description"],
                "priority": row["priority"],
                "status": row["status"],
                "asset_id": row["asset_id"],
                "created_at": row["created_at"].isoformat(),
            }
        )

    async def _atlas_work_order(self, label: str, digits: str) -> JSONResponse:
        """What FactoryLM sent to Atlas (cmms_links): this process holds no Atlas credentials,
        and Atlas keeps only an escaped, possibly cut copy of the description. The live status
        is Atlas's own."""
        row = await self._pool.fetchrow(
            """SELECT * FROM cmms_links WHERE system = 'atlas' AND remote_id = $1
               ORDER BY created_at DESC LIMIT 1""",
            str(int(digits)),
        )
        if row is None:
            return error(404, f"no work order {label}")
        return JSONResponse(
            {
                "id": f"ATLAS-{row['remote_id']}",
                "system": "atlas",
                "title": row["title"],
                "description": row["description"],
                "priority": row["priority"],
                "status": None,  # kept in Atlas: FactoryLM does not mirror it
                "asset_id": row["asset_id"],
                "atlas": {
                    "id": int(row["remote_id"]),
                    "custom_id": row["remote_custom_id"],
                    "asset_id": None
                    if row["remote_asset_id"] is None
                    else int(row["remote_asset_id"]),
                    "description_cut": row["truncated"],
                },
                "created_at": row["created_at"].isoformat(),
            }
        )

    async def baselines(self, request: Request) -> JSONResponse:
        rows = await self._pool.fetch(
            """SELECT DISTINCT ON (plc_id, metric) plc_id, metric, mean, std, p95, p99,
                      sample_count, window_start, window_end, computed_at
               FROM baselines ORDER BY plc_id, metric, computed_at DESC, id DESC"""
        )
        return JSONResponse(
            {
                "baselines": [
                    {
                        "plc_id": r["plc_id"],
                        "metric": r["metric"],
                        # JSON has no NaN: a non-finite statistic is shown as null.
                        **{k: _finite(r[k]) for k in ("mean", "std", "p95", "p99")},
                        "sample_count": r["sample_count"],
                        "window_start": r["window_start"].isoformat(),
                        "window_end": r["window_end"].isoformat(),
                        "computed_at": r["computed_at"].isoformat(),
                    }
                    for r in rows
                ]
            }
        )

    async def collectors(self, request: Request) -> JSONResponse:
        # Written by the ingest's collector manager (ingest/manager.py), one row per PLC.
        rows = await self._pool.fetch("SELECT * FROM collector_status ORDER BY plc_id")
        writers = await self._pool.fetch("SELECT * FROM ingest_writer_status ORDER BY host")

        def plain(row: asyncpg.Record) -> dict[str, object]:
            return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}

        return JSONResponse(
            {"collectors": [plain(r) for r in rows], "writers": [plain(w) for w in writers]}
        )

    def routes(self, guard: AccessGuard) -> list[Route]:
        return [
            Route("/health", self.health),
            Route("/collectors", guard(self.collectors, READ)),
            Route("/baselines", guard(self.baselines, READ)),
            Route("/approvals/{workflow_id}", guard(self.approve, APPROVE), methods=["POST"]),
            Route("/work-orders/{wo_id}", guard(self.work_order, READ)),
        ]
