"""Request bodies are capped while they arrive: 413 as soon as a body passes its route's cap —
from Content-Length before a byte is read, or mid-stream for a chunked body — so an
unauthenticated multi-gigabyte POST costs the API one cap's worth of memory, and webhooks
are refused before their signature check ever reads them."""

from __future__ import annotations

from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KIB = 1024
DEFAULT_CAP = 64 * KIB  # JSON bodies of the operator endpoints, Twilio's form posts


class BodyLimit:
    def __init__(self, app: ASGIApp, cap_for: Callable[[str], int]) -> None:
        self.app = app
        self.cap_for = cap_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared and (not declared.isdigit() or int(declared) > cap):
            await _too_large(cap)(scope, receive, send)
            return
        received = 0

        async def capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    # Raised inside the handler's read: Starlette answers it with a 413.
                    raise HTTPException(413, _detail(cap))
            return message

        await self.app(scope, capped, send)


def _detail(cap: int) -> str:
    return f"request body too large: at most {cap // KIB} KiB here"


def _too_large(cap: int) -> JSONResponse:
    return JSONResponse({"error": _detail(cap)}, status_code=413, headers={"connection": "close"})
