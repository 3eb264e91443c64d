"""The Anthropic Messages API (POST /v1/messages) as far as the product uses it: forced tool
use, usage counts, and the documented error body {"type": "error", "error": {...}}."""

from __future__ import annotations

import asyncio
import json
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dev.fakes.scripted import Script
from dev.fakes.server import LocalServer


def anthropic_app(script: Script, api_key: str) -> Starlette:
    async def messages(request: Request) -> JSONResponse:
        # The client authenticates with x-api-key or, in newer releases, a bearer token.
        presented = request.headers.get("x-api-key") or request.headers.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        if presented != api_key or "anthropic-version" not in request.headers:
            return JSONResponse(
                {
                    "type": "error",
                    "error": {"type": "authentication_error", "message": "invalid x-api-key"},
                },
                status_code=401,
            )
        payload = await request.json()
        script.requests.append(payload)
        script.headers.append(dict(request.headers))
        reply = script.next(payload)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.status != 200:
            return JSONResponse(
                {
                    "type": "error",
                    "error": {"type": reply.error_type, "message": str(reply.body)},
                },
                status_code=reply.status,
            )
        if reply.raw_text is not None:
            content = [{"type": "text", "text": reply.raw_text}]
            out = reply.raw_text
        else:
            tool = payload.get("tool_choice", {}).get("name", "respond")
            content = [
                {
                    "type": "tool_use",
                    "id": f"toolu_{uuid.uuid4().hex[:20]}",
                    "name": tool,
                    "input": reply.body,
                }
            ]
            out = json.dumps(reply.body)
        return JSONResponse(
            {
                "id": f"msg_{uuid.uuid4().hex[:20]}",
                "type": "message",
                "role": "assistant",
                "model": payload["model"],
                "content": content,
                "stop_reason": "tool_use" if reply.raw_text is None else "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": len(json.dumps(payload)) // 4,
                    "output_tokens": max(1, len(out) // 4),
                },
            }
        )

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


def fake_anthropic(script: Script, api_key: str = "sk-ant-test") -> LocalServer:
    return LocalServer(anthropic_app(script, api_key))
