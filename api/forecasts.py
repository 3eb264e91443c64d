"""GET /forecasts: every metric whose trend will reach an action threshold, soonest first.

The ingest writes them once a minute (ingest/forecast.py); a row not refreshed for
STALE_AFTER_S belongs to an ingest that stopped, and its forecast is not served as current.
"""

from __future__ import annotations

import asyncpg
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from factorylm.models.forecasts import Forecast

STALE_AFTER_S = 300


class ForecastsEndpoint:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def handle(self, request: Request) -> JSONResponse:
        rows = await self._pool.fetch(
            """SELECT forecast::text AS forecast, updated_at FROM forecasts
               WHERE forecast IS NOT NULL AND updated_at > now() - make_interval(secs => $1)""",
            STALE_AFTER_S,
        )
        out = []
        for r in rows:
            try:
                f = Forecast.model_validate_json(r["forecast"])
            except ValidationError:
                continue  # a row written by hand or by another version: not a forecast
            out.append(
                {
                    **f.model_dump(mode="json"),
                    "due": f.due.isoformat(),
                    "text": f.describe(),
                    "updated_at": r["updated_at"].isoformat(),
                }
            )
        out.sort(key=lambda f: f["eta_s"])
        return JSONResponse({"forecasts": out})
