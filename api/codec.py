"""The codec endpoint for the Temporal Web UI: with payloads encrypted (factorylm/codec.py),
the UI shows histories decoded only through this endpoint, so only to a person whose browser
presents a FactoryLM token with the viewer role (the UI's "pass access token" setting), and
only from the UI's own origin (CORS).

POST /codec/decode and /codec/encode take and return `{"payloads": [...]}` in Temporal's
JSON form of Payload (base64 metadata values and data), as the Web UI sends them.
"""

from __future__ import annotations

import json

from google.protobuf import json_format
from google.protobuf.message import Error as ProtobufError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads

from api.auth import READ, AccessGuard
from factorylm.codec import EncryptionCodec, PayloadKeyError

MAX_PAYLOADS = 1000


class CodecRoutes:
    def __init__(self, codec: EncryptionCodec | None) -> None:
        self._codec = codec

    async def _convert(self, request: Request, decode: bool) -> Response:
        if self._codec is None:
            return JSONResponse(
                {"error": "payload encryption is off (FACTORYLM_PAYLOAD_KEYS is not set)"}, 404
            )
        try:
            body = json.loads(await request.body() or b"{}")
            payloads = json_format.ParseDict(body, Payloads())
        except (
            json.JSONDecodeError,
            json_format.Error,
            ProtobufError,
            TypeError,
            ValueError,
        ) as exc:
            return JSONResponse({"error": f'expected {{"payloads": [...]}}: {exc}'}, 400)
        if len(payloads.payloads) > MAX_PAYLOADS:
            return JSONResponse({"error": f"at most {MAX_PAYLOADS} payloads a request"}, 413)
        try:
            if decode:
                converted = await self._codec.decode(payloads.payloads)
            else:
                converted = await self._codec.encode(payloads.payloads)
        except PayloadKeyError as exc:
            return JSONResponse({"error": str(exc)}, 422)
        return JSONResponse(json_format.MessageToDict(Payloads(payloads=converted)))

    async def decode(self, request: Request) -> Response:
        return await self._convert(request, decode=True)

    async def encode(self, request: Request) -> Response:
        return await self._convert(request, decode=False)

    def routes(self, guard: AccessGuard) -> list[Route]:
        return [
            Route("/codec/decode", guard(self.decode, READ), methods=["POST"]),
            Route("/codec/encode", guard(self.encode, READ), methods=["POST"]),
        ]
