"""Who may call the operator endpoints: one guard, applied where the routes are listed, so no
handler can forget it. A request's client comes from its bearer token — a per-client token
from `factorylm tokens add` (factorylm/api_tokens.py), or the optional bootstrap admin token
FACTORYLM_API_TOKEN — and each route names the roles it admits."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Collection

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from factorylm.api_tokens import ApiClient, Role, TokenStore
from factorylm.settings import Settings, reveal

Handler = Callable[[Request], Awaitable[Response]]
UNAUTHORIZED = "missing or wrong bearer token (Authorization: Bearer <token>)"

READ: frozenset[Role] = frozenset({Role.VIEWER, Role.APPROVER, Role.ADMIN})
UPLOAD: frozenset[Role] = frozenset({Role.UPLOADER, Role.ADMIN})
APPROVE: frozenset[Role] = frozenset({Role.APPROVER, Role.ADMIN})


def client_of(request: Request) -> ApiClient:
    """The authenticated client of a guarded request."""
    client: ApiClient = request.state.api_client
    return client


class AccessGuard:
    """Wraps a handler: 401 without a valid token, 403 when its role may not do this."""

    def __init__(self, settings: Settings, tokens: TokenStore) -> None:
        secret = reveal(settings.api_token)
        # Header values are latin-1 text in ASGI: compare bytes, so any header is a 401,
        # never a 500 (compare_digest refuses non-ASCII str).
        self._bootstrap = secret.encode("utf-8") if secret else None
        self._tokens = tokens

    async def client(self, request: Request) -> ApiClient | None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        raw = given.strip().encode("latin-1")
        if scheme.lower() != "bearer" or not raw:
            return None
        if self._bootstrap is not None and hmac.compare_digest(raw, self._bootstrap):
            return ApiClient("bootstrap", Role.ADMIN)
        return await self._tokens.client_for(raw)

    def __call__(self, handler: Handler, roles: Collection[Role] = READ) -> Handler:
        allowed = frozenset(roles)

        async def guarded(request: Request) -> Response:
            client = await self.client(request)
            if client is None:
                return JSONResponse({"error": UNAUTHORIZED}, status_code=401)
            if client.role not in allowed:
                need = " or ".join(sorted(r.value for r in allowed))
                return JSONResponse(
                    {
                        "error": f"token {client.name!r} ({client.role}) may not do this: needs {need}"
                    },
                    status_code=403,
                )
            request.state.api_client = client
            return await handler(request)

        guarded.__name__ = getattr(handler, "__name__", "guarded")
        return guarded
