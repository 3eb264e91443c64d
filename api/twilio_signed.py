"""Twilio's webhooks (inbound WhatsApp messages, delivery status callbacks): the form read once
and accepted only with a valid X-Twilio-Signature over the public URL Twilio called."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from factorylm.settings import Settings, reveal
from factorylm.whatsapp import signature_ok

log = logging.getLogger(__name__)


async def signed_form(request: Request, settings: Settings, what: str) -> dict[str, str] | Response:
    """The request's form when Twilio signed it, else the refusal to answer with (503 when no
    auth token is configured, 403 for a bad or missing signature)."""
    if not settings.twilio_auth_token:
        return Response(f"{what} not configured (FACTORYLM_TWILIO_AUTH_TOKEN)", status_code=503)
    raw = (await request.body()).decode("utf-8", errors="replace")
    # Blank values are kept: Twilio signs them too.
    form = dict(parse_qsl(raw, keep_blank_values=True))
    url = settings.public_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("x-twilio-signature", "")
    if not signature_ok(reveal(settings.twilio_auth_token), url, form, signature):
        log.warning("refused a %s with a bad signature from %s", what, request.client)
        return Response("invalid signature", status_code=403)
    return form
