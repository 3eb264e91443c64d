"""The Starlette application: the operator endpoints behind one bearer-token guard, and the
webhooks (Twilio, Trello), which authenticate by their senders' signatures instead."""

from __future__ import annotations

import asyncpg
from starlette.applications import Starlette
from starlette.routing import Route
from temporalio.client import Client

from api.auth import BearerGuard
from api.budget import BudgetEndpoint
from api.operations import OperatorRoutes
from api.photo_intake import PhotoIntake
from api.photos import PhotoRoutes
from api.trello import WEBHOOK_PATH, TrelloWebhook
from api.whatsapp import WhatsAppWebhook
from api.whatsapp_photos import WhatsAppPhotos
from api.work_log import WorkLogEndpoint
from factorylm.photos.store import photo_store_for
from factorylm.settings import Settings


def create_app(settings: Settings, client: Client, pool: asyncpg.Pool) -> Starlette:
    guard = BearerGuard(settings.api_token)
    intake = PhotoIntake(settings, client, pool, photo_store_for(settings))
    whatsapp = WhatsAppWebhook(
        settings, client, pool, WhatsAppPhotos(settings, client, pool, intake)
    )
    trello = TrelloWebhook(settings, client)
    budget = BudgetEndpoint(settings, pool)
    return Starlette(
        routes=[
            Route("/webhooks/twilio/whatsapp", whatsapp.handle, methods=["POST"]),
            Route(WEBHOOK_PATH, trello.handle, methods=["POST", "HEAD"]),
            Route("/budget", guard(budget.handle)),
            Route("/work-log", guard(WorkLogEndpoint(settings, client, pool).handle)),
            *OperatorRoutes(settings, client, pool).routes(guard),
            *PhotoRoutes(settings, pool, intake).routes(guard),
        ]
    )
