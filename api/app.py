"""The Starlette application: the operator endpoints behind one bearer-token guard, and the
webhooks (Twilio, Trello), which authenticate by their senders' signatures instead."""

from __future__ import annotations

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client

from api.auth import READ, AccessGuard
from api.board import BoardRoutes
from api.budget import BudgetEndpoint
from api.codec import CodecRoutes
from api.forecasts import ForecastsEndpoint
from api.limits import DEFAULT_CAP, KIB, BodyLimit
from api.openapi import openapi
from api.operations import OperatorRoutes
from api.photo_intake import PhotoIntake
from api.photos import PhotoRoutes
from api.trello import WEBHOOK_PATH, TrelloWebhook
from api.twilio_status import STATUS_PATH, TwilioStatusWebhook
from api.whatsapp import WhatsAppWebhook
from api.whatsapp_photos import WhatsAppPhotos
from api.work_log import WorkLogEndpoint
from factorylm.api_tokens import TokenStore
from factorylm.photos.store import photo_store_for
from factorylm.settings import Settings
from factorylm.temporal_client import payload_codec

PHOTO_FORM_OVERHEAD = 64 * KIB  # multipart boundaries and the form's small fields
TRELLO_CAP = 2048 * KIB


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def create_app(settings: Settings, client: Client, pool: asyncpg.Pool) -> Starlette:
    guard = AccessGuard(settings, TokenStore(pool))
    intake = PhotoIntake(settings, client, pool, photo_store_for(settings))
    whatsapp = WhatsAppWebhook(
        settings, client, pool, WhatsAppPhotos(settings, client, pool, intake)
    )
    trello = TrelloWebhook(settings, client)
    budget = BudgetEndpoint(settings, pool)
    photo_cap = settings.photo_max_bytes + PHOTO_FORM_OVERHEAD

    def cap_for(path: str) -> int:
        if path == "/photos":
            return photo_cap
        if path == WEBHOOK_PATH:
            return TRELLO_CAP  # Trello sends the card and board it acted on
        return DEFAULT_CAP

    return Starlette(
        middleware=[
            Middleware(BodyLimit, cap_for=cap_for),
            # The Web UI calls the codec endpoint from its own origin, with the token.
            Middleware(
                CORSMiddleware,
                allow_origins=[settings.temporal_ui_url],
                allow_methods=["POST"],
                allow_headers=["authorization", "content-type", "x-namespace"],
                allow_credentials=True,
            ),
        ],
        exception_handlers={HTTPException: _http_error},
        routes=[
            Route("/webhooks/twilio/whatsapp", whatsapp.handle, methods=["POST"]),
            Route(
                STATUS_PATH, TwilioStatusWebhook(settings, client, pool).handle, methods=["POST"]
            ),
            Route(WEBHOOK_PATH, trello.handle, methods=["POST", "HEAD"]),
            Route("/openapi.json", openapi),
            Route("/budget", guard(budget.handle, READ)),
            Route("/forecasts", guard(ForecastsEndpoint(pool).handle, READ)),
            Route("/work-log", guard(WorkLogEndpoint(settings, client, pool).handle)),
            *OperatorRoutes(settings, client, pool).routes(guard),
            *PhotoRoutes(settings, pool, intake).routes(guard),
            *CodecRoutes(payload_codec(settings)).routes(guard),
            # The plant board at / (its own login page; reads only): api/board.py.
            *BoardRoutes(settings, client, pool, guard).routes(),
        ],
    )
