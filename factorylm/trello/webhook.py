"""Trello webhook signatures: base64(HMAC-SHA1(app secret, raw body + callback URL)), sent in
the X-Trello-Webhook header. The callback URL is the one registered with Trello, i.e. the
public URL, not whatever address the request arrived on behind a proxy."""

from __future__ import annotations

import base64
import hashlib
import hmac

SIGNATURE_HEADER = "X-Trello-Webhook"


def sign(secret: str, body: bytes, callback_url: str) -> str:
    digest = hmac.new(secret.encode(), body + callback_url.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify(secret: str, body: bytes, callback_url: str, signature: str) -> bool:
    if not secret or not signature:
        return False
    return hmac.compare_digest(sign(secret, body, callback_url), signature.strip())
