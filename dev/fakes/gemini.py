"""The Gemini API's generateContent (POST /{version}/models/{model}:generateContent): JSON
output as the candidate's text part, usageMetadata, and the documented error body
{"error": {"code", "message", "status"}}."""

from __future__ import annotations

import asyncio
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dev.fakes.scripted import Script
from dev.fakes.server import LocalServer

_STATUS = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


def gemini_app(script: Script, api_key: str) -> Starlette:
    async def generate(request: Request) -> JSONResponse:
        model, _, method = request.path_params["target"].partition(":")
        if method != "generateContent":
            return JSONResponse({"error": {"code": 404, "message": "not found"}}, 404)
        if request.headers.get("x-goog-api-key") != api_key:
            return JSONResponse(
                {
                    "error": {
                        "code": 400,
                        "message": "API key not valid",
                        "status": "INVALID_ARGUMENT",
                    }
                },
                status_code=400,
            )
        payload = await request.json()
        payload["_model"] = model
        payload["_version"] = request.path_params["version"]
        script.requests.append(payload)
        script.headers.append(dict(request.headers))
        reply = script.next(payload)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.status != 200:
            return JSONResponse(
                {
                    "error": {
                        "code": reply.status,
                        "message": str(reply.body),
                        "status": _STATUS.get(reply.status, "UNKNOWN"),
                    }
                },
                status_code=reply.status,
            )
        text = reply.raw_text if reply.raw_text is not None else json.dumps(reply.body)
        prompt_tokens = len(json.dumps(payload)) // 4
        out_tokens = max(1, len(text) // 4)
        return JSONResponse(
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": text}], "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": prompt_tokens,
                    "candidatesTokenCount": out_tokens,
                    "totalTokenCount": prompt_tokens + out_tokens,
                },
                "modelVersion": model,
            }
        )

    return Starlette(routes=[Route("/{version}/models/{target:path}", generate, methods=["POST"])])


def fake_gemini(script: Script, api_key: str = "gemini-test-key") -> LocalServer:
    return LocalServer(gemini_app(script, api_key))
