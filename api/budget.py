"""GET /budget: tokens used and limits per window and per agent, and when they run out."""

from __future__ import annotations

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse

from factorylm.budget import BudgetLedger, Limits
from factorylm.settings import Settings


class BudgetEndpoint:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self._ledger = BudgetLedger(pool, Limits.from_settings(settings))

    async def handle(self, request: Request) -> JSONResponse:
        status = await self._ledger.status()
        return JSONResponse(status.as_json())
