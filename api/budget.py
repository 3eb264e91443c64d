"""GET /budget: tokens used and limits per window and per agent, and when they run out."""

from __future__ import annotations

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import bearer_ok
from factorylm.budget import BudgetLedger, Limits
from factorylm.settings import Settings


class BudgetEndpoint:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self._settings = settings
        self._ledger = BudgetLedger(pool, Limits.from_settings(settings))

    async def handle(self, request: Request) -> JSONResponse:
        if not bearer_ok(request, self._settings.api_token):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        status = await self._ledger.status()
        return JSONResponse(status.as_json())
