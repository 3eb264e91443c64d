"""GET /work-log: the Workflow Tracker — every agent's work, newest first.

Query parameters (all optional): agent (drift, photo, health, baseline, outcome, monkey),
since and until (ISO 8601 with a zone), outcome (a workflow status such as completed or failed,
or for Monkey cards passed, blocked, needs_provider), limit (1..1000, default 100).
"""

from __future__ import annotations

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse
from temporalio.client import Client

from factorylm.settings import Settings
from factorylm.worklog import WorkFilter, WorkLogError, parse_time, work_log


class WorkLogEndpoint:
    def __init__(self, settings: Settings, client: Client, pool: asyncpg.Pool) -> None:
        self._settings = settings
        self._client = client
        self._pool = pool

    async def handle(self, request: Request) -> JSONResponse:
        q = request.query_params
        try:
            limit = int(q.get("limit") or 100)
            f = WorkFilter(
                agent=q.get("agent") or None,
                since=parse_time(q.get("since"), "since"),
                until=parse_time(q.get("until"), "until"),
                outcome=q.get("outcome") or None,
                limit=limit,
            )
        except (WorkLogError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        items = await work_log(self._client, self._pool, self._settings, f)
        return JSONResponse({"items": [item.as_json() for item in items], "count": len(items)})
