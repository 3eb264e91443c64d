"""A local Atlas CMMS: the REST paths FactoryLM uses, with Atlas's shapes.

POST /auth/signin → {"accessToken"}; tokens can be expired on demand to exercise re-sign-in;
POST /files/upload (multipart "files") → [{"id", "name", "url"}]; POST /work-orders →
the created work order; POST /work-orders/search with filterFields → {"content": [...]}.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PRIORITIES = {"NONE", "LOW", "MEDIUM", "HIGH"}


@dataclass
class FakeAtlas:
    email: str = "factorylm@plant.example"
    password: str = "atlas-secret"
    work_orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    files: dict[int, dict[str, Any]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    sign_ins: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(101))

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def _authorised(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme == "Bearer" and token in self.tokens

    async def _signin(self, request: Request) -> JSONResponse:
        body = await request.json()
        if body.get("email") != self.email or body.get("password") != self.password:
            return JSONResponse({"message": "Invalid credentials"}, 403)
        token = secrets.token_hex(16)
        self.tokens.add(token)
        self.sign_ins += 1
        return JSONResponse({"accessToken": token})

    async def _upload(self, request: Request) -> JSONResponse:
        if not self._authorised(request):
            return JSONResponse({"message": "Unauthorized"}, 401)
        form = await request.form()
        out = []
        for upload in form.getlist("files"):
            if not isinstance(upload, UploadFile):
                return JSONResponse({"message": "files must be file parts"}, 400)
            data = await upload.read()
            fid = next(self._ids)
            self.files[fid] = {
                "id": fid,
                "name": upload.filename,
                "size": len(data),
                "data": data,
                "type": form.get("type"),
                "folder": form.get("folder"),
            }
            out.append({"id": fid, "name": upload.filename, "url": f"/files/{fid}"})
        return JSONResponse(out)

    async def _create(self, request: Request) -> JSONResponse:
        if not self._authorised(request):
            return JSONResponse({"message": "Unauthorized"}, 401)
        body = await request.json()
        if not body.get("title"):
            return JSONResponse({"message": "title is required"}, 400)
        if body.get("priority", "NONE") not in PRIORITIES:
            return JSONResponse({"message": f"bad priority {body.get('priority')}"}, 400)
        for f in body.get("files", []):
            if f.get("id") not in self.files:
                return JSONResponse({"message": f"unknown file {f.get('id')}"}, 400)
        wid = next(self._ids)
        self.work_orders[wid] = {"id": wid, "status": "OPEN", "customId": f"WO{wid:06d}", **body}
        return JSONResponse(self.work_orders[wid], status_code=201)

    async def _search(self, request: Request) -> JSONResponse:
        if not self._authorised(request):
            return JSONResponse({"message": "Unauthorized"}, 401)
        body = await request.json()
        hits = list(self.work_orders.values())
        for flt in body.get("filterFields", []):
            if flt.get("operation") == "cn":
                hits = [w for w in hits if str(flt["value"]) in str(w.get(flt["field"], ""))]
        size = int(body.get("pageSize", 10))
        return JSONResponse({"content": hits[:size], "totalElements": len(hits)})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/auth/signin", self._signin, methods=["POST"]),
                Route("/files/upload", self._upload, methods=["POST"]),
                Route("/work-orders", self._create, methods=["POST"]),
                Route("/work-orders/search", self._search, methods=["POST"]),
            ]
        )
