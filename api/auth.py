"""Bearer-token authentication for the operator endpoints."""

from __future__ import annotations

import hmac

from starlette.requests import Request


def bearer_ok(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)
