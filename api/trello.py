"""POST /webhooks/trello: Trello's board events. HEAD answers Trello's registration probe.

Every POST must carry Trello's signature (X-Trello-Webhook: base64 HMAC-SHA1 of the raw body
followed by the callback URL, keyed with the app secret); anything else is refused with 403.
A card that moved, or was created or changed, wakes the Monkey to look at the board again; a
card a person moved from Review Needed to Done is accepted: the Monkey merges its branch.
"""

from __future__ import annotations

import json
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from factorylm.models.monkey import DONE, REVIEW_NEEDED
from factorylm.settings import Settings
from factorylm.trello.webhook import SIGNATURE_HEADER, verify

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/trello"
_WAKING_ACTIONS = {"createCard", "updateCard", "moveCardToBoard", "addLabelToCard"}


def callback_url(settings: Settings) -> str:
    return settings.public_url.rstrip("/") + WEBHOOK_PATH


class TrelloWebhook:
    def __init__(self, settings: Settings, client: Client) -> None:
        self._settings = settings
        self._client = client

    async def handle(self, request: Request) -> Response:
        if request.method == "HEAD":
            return Response(status_code=200)
        body = await request.body()
        secret = self._settings.trello_app_secret
        if secret is None:
            log.warning("Trello webhook refused: FACTORYLM_TRELLO_APP_SECRET is not set")
            return JSONResponse({"error": "webhook secret not configured"}, status_code=403)
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not verify(secret.get_secret_value(), body, callback_url(self._settings), signature):
            log.warning("Trello webhook refused: bad or missing %s signature", SIGNATURE_HEADER)
            return JSONResponse({"error": "invalid signature"}, status_code=403)
        try:
            action = json.loads(body).get("action") or {}
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return JSONResponse({"error": "body is not a Trello action"}, status_code=400)
        kind = str(action.get("type", ""))
        if kind not in _WAKING_ACTIONS:
            return JSONResponse({"woke": False, "action": kind})
        data = action.get("data") or {}
        card = data.get("card") or {}
        reason = f"Trello {kind} on card {card.get('name') or card.get('id') or '?'}"
        before = str((data.get("listBefore") or {}).get("name") or "")
        after = str((data.get("listAfter") or {}).get("name") or "")
        accepted = before == REVIEW_NEEDED and after == DONE and bool(card.get("id"))
        handle = self._client.get_workflow_handle(self._settings.monkey_workflow_id)
        try:
            if accepted:
                # Signalled by name: the API layer does not import workflow code.
                await handle.signal("card_accepted", str(card["id"]))
                return JSONResponse({"woke": True, "action": kind, "accepted": card["id"]})
            await handle.signal("wake", reason)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return JSONResponse({"woke": False, "action": kind, "reason": "Monkey not running"})
        return JSONResponse({"woke": True, "action": kind})
