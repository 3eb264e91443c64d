"""Bearer-token authentication for the operator endpoints: one guard, applied where the routes
are listed, so no handler can forget it."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

Handler = Callable[[Request], Awaitable[Response]]
UNAUTHORIZED = "missing or wrong bearer token (Authorization: Bearer <token>)"


def bearer_ok(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


class BearerGuard:
    """Wraps a handler: 401 unless the request carries the API token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if not bearer_ok(request, self._token):
                return JSONResponse({"error": UNAUTHORIZED}, status_code=401)
            return await handler(request)

        guarded.__name__ = getattr(handler, "__name__", "guarded")
        return guarded
