"""A local Atlas CMMS that behaves like the real server (Grashjs/cmms `api/`, Spring Boot) on
the paths FactoryLM uses, checked by hand against that server (docs/operations.md, Atlas CMMS).

What it reproduces, because the client must survive each:
- sessions: POST /auth/signin → accessToken (a short-lived bearer), refreshToken, tokenType,
  expiresAt; POST /auth/refresh trades a refresh token for a new pair and rotates it (the
  old one is revoked; presenting a revoked one is "reuse": every refresh token of the account
  is revoked, 401). An expired, malformed, revoked or missing access token is answered
  **403 with an empty body** (Atlas's JWT filter), never 401.
- errors: `{"success": false, "message": …}`; bad credentials 403; a missing `title` 400
  "must not be null"; a bad priority 500 (a JSON parse error); an unknown asset id 500 (a
  foreign-key violation); unknown fields (`asset_id`) ignored.
- text: titles, descriptions and asset names are HTML-cleaned on save (tags dropped, `&`,
  `<`, `>` escaped, trimmed); a description over the documented 10 000 characters
  (`@Column(length = 10000)`) is a 500 here. The build checked by hand stored 20 000 (its
  column is `text`): this enforces the documented limit, which the client keeps to.
- search: POST /work-orders/search and /assets/search with filterFields, `cn` is a case- and
  accent-insensitive LIKE in which `%` and `_` are wildcards, `eq` is exact; answers are
  Spring pages (content, totalElements, totalPages, number, size, first, last, empty).
- a role without the create permission: 403 "Access denied". Create answers 200; work orders
  get customId WO000001…, status OPEN, and their due date comes back as a timestamp;
  GET /work-orders/{id} takes the numeric id (404 otherwise).
- licence switches (`entitlements`): without FILE_ATTACHMENTS an upload is 403 "You need a
  license to add a file"; without UNLIMITED_ACTIVE_WORK_ORDERS the 31st incomplete work
  order is 403; without UNLIMITED_ASSETS the 51st asset is 403. Uploads need `folder`,
  `hidden` and `type` (IMAGE or OTHER; each missing or wrong: 500), configured storage
  (`storage_configured`, else 500 "MinIO is not configured…") and are limited to 20 a minute
  per user (429).
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PRIORITIES = ("NONE", "HIGH", "LOW", "MEDIUM")
FILE_TYPES = ("IMAGE", "OTHER")
FREE_ACTIVE_WORK_ORDERS = 30
FREE_ASSETS = 50
UPLOADS_PER_MINUTE = 20
DESCRIPTION_COLUMN = 10_000
_TAG = re.compile(r"</?[A-Za-z!][^>]*>")


def clean_text(value: Any) -> Any:
    """Jsoup.clean(text, Safelist.none()) for what FactoryLM sends: tags dropped, the text's
    `&`, `<`, `>` (and no-break spaces) escaped, trimmed."""
    if not isinstance(value, str) or not value:
        return value
    text = _TAG.sub("", value)
    text = (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\u00a0", "&nbsp;")
    )
    return text.strip()


def _fold(text: str) -> str:
    """PostgreSQL's unaccent(lower(x)), near enough: lower case, accents removed."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def like(value: str, pattern: str) -> bool:
    """PostgreSQL's LIKE: `%` any run, `_` any one character, `\\` escapes the next one."""
    parts, chars = [], iter(pattern)
    for c in chars:
        if c == "\\":
            parts.append(re.escape(next(chars, "")))
        else:
            parts.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
    return re.fullmatch("".join(parts), value, flags=re.DOTALL) is not None


def _timestamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+00:00"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "message": message}, status)


@dataclass
class _Session:
    email: str
    expires: float


@dataclass
class _Refresh:
    expires: float
    revoked: bool = False


@dataclass
class FakeAtlas:
    email: str = "factorylm@plant.example"
    password: str = "atlas-secret"
    access_ttl_s: float = 1800.0  # JWT_EXPIRE_LENGTH's default, 30 min
    refresh_ttl_s: float = 7 * 86400.0
    # Licence entitlements held (LicenseEntitlement names); none: Atlas's free tier.
    entitlements: set[str] = field(default_factory=set)
    storage_configured: bool = False
    # The user's role may create work orders (Atlas: 403 "Access denied" otherwise).
    can_create_work_orders: bool = True
    work_orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    assets: dict[int, dict[str, Any]] = field(default_factory=dict)
    files: dict[int, dict[str, Any]] = field(default_factory=dict)
    sign_ins: int = 0
    refreshes: int = 0
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    _access: dict[str, _Session] = field(default_factory=dict)
    _refresh: dict[str, _Refresh] = field(default_factory=dict)
    _uploads: deque[float] = field(default_factory=deque)
    _wo_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _asset_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _file_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- switches for tests ------------------------------------------------------------------
    def license(self, *entitlements: str) -> None:
        self.entitlements.update(entitlements)

    def expire_tokens(self) -> None:
        """Every access token issued so far is past its expiry (refresh tokens stay valid)."""
        for session in self._access.values():
            session.expires = 0.0

    def revoke_refresh_tokens(self) -> None:
        for token in self._refresh.values():
            token.revoked = True

    # -- sessions ----------------------------------------------------------------------------
    def _pair(self) -> dict[str, Any]:
        now = time.time()
        access = secrets.token_urlsafe(24)
        refresh = f"{secrets.token_hex(8)}.{secrets.token_hex(8)}"
        self._access[access] = _Session(self.email, now + self.access_ttl_s)
        self._refresh[refresh] = _Refresh(now + self.refresh_ttl_s)
        return {
            "accessToken": access,
            "refreshToken": refresh,
            "tokenType": "Bearer",
            "expiresAt": _timestamp(datetime.fromtimestamp(now + self.access_ttl_s, UTC)),
        }

    def _authorised(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        session = self._access.get(token) if scheme == "Bearer" else None
        return session is not None and session.expires > time.time()

    async def _signin(self, request: Request) -> JSONResponse:
        body = await request.json()
        if body.get("email") != self.email or body.get("password") != self.password:
            return _error(403, "Invalid credentials")
        self.sign_ins += 1
        return JSONResponse(self._pair())

    async def _refresh_pair(self, request: Request) -> JSONResponse:
        body = await request.json()
        raw = body.get("refreshToken") if isinstance(body, dict) else None
        if not raw:
            return _error(400, "must not be blank")
        stored = self._refresh.get(str(raw))
        if stored is None:
            return _error(401, "Invalid refresh token")
        if stored.revoked:
            self.revoke_refresh_tokens()
            return _error(
                401,
                "Refresh token reuse detected. All sessions have been revoked. "
                "Please sign in again",
            )
        if stored.expires < time.time():
            stored.revoked = True
            return _error(401, "Refresh token expired. Please sign in again")
        stored.revoked = True
        self.refreshes += 1
        return JSONResponse(self._pair())

    # -- files -------------------------------------------------------------------------------
    async def _upload(self, request: Request) -> Response:
        form = await request.form()
        for name in ("folder", "hidden", "type"):
            if form.get(name) is None:
                return _error(
                    500,
                    f"Required request parameter '{name}' for method parameter type String "
                    "is not present",
                )
        file_type = str(form.get("type"))
        if file_type not in FILE_TYPES:
            return _error(
                500,
                f"Method parameter 'type': Failed to convert value of type 'java.lang.String' "
                f"to required type 'com.grash.model.enums.FileType' for value [{file_type}]",
            )
        if "FILE_ATTACHMENTS" not in self.entitlements:
            return _error(403, "You need a license to add a file")
        now = time.monotonic()
        while self._uploads and self._uploads[0] < now - 60:
            self._uploads.popleft()
        if len(self._uploads) >= UPLOADS_PER_MINUTE:
            return _error(429, "Rate limit exceeded. Try again later.")
        self._uploads.append(now)
        if not self.storage_configured:
            return _error(
                500,
                "MinIO is not configured. Please define the MinIO credentials in the env variables",
            )
        out = []
        for upload in form.getlist("files"):
            if not isinstance(upload, UploadFile):
                return _error(500, "Required part 'files' is not present.")
            data = await upload.read()
            fid = next(self._file_ids)
            self.files[fid] = {
                "id": fid,
                "name": upload.filename,
                "size": len(data),
                "data": data,
                "type": file_type,
                "hidden": form.get("hidden") == "true",
                "folder": form.get("folder"),
            }
            out.append(
                {
                    "id": fid,
                    "name": upload.filename,
                    "url": f"/files/{fid}",
                    "type": file_type,
                    "hidden": form.get("hidden") == "true",
                }
            )
        return JSONResponse(out)

    # -- assets ------------------------------------------------------------------------------
    async def _create_asset(self, request: Request) -> Response:
        body = await request.json()
        if not body.get("name"):
            return _error(400, "must not be null")
        if "UNLIMITED_ASSETS" not in self.entitlements and len(self.assets) >= FREE_ASSETS:
            return _error(
                403, f"You need a license to add a new asset. Free Limit reached: {FREE_ASSETS}"
            )
        aid = next(self._asset_ids)
        self.assets[aid] = {
            "id": aid,
            "customId": f"A{aid:06d}",  # assigned by Atlas: a customId sent is ignored
            "name": clean_text(body["name"]),
            "description": clean_text(body.get("description")),
            "archived": False,
            "createdAt": _timestamp(datetime.now(UTC)),
        }
        return JSONResponse(self.assets[aid])

    # -- work orders -------------------------------------------------------------------------
    def _active(self) -> int:
        return sum(1 for w in self.work_orders.values() if w["status"] != "COMPLETE")

    async def _create(self, request: Request) -> Response:
        body = await request.json()
        priority = body.get("priority", "NONE")
        if priority not in PRIORITIES:
            return _error(
                500,
                "JSON parse error: Cannot deserialize value of type "
                f'`com.grash.model.enums.Priority` from String "{priority}": not one of the '
                f"values accepted for Enum class: [{', '.join(PRIORITIES)}]",
            )
        if body.get("title") is None:
            return _error(400, "must not be null")
        if not self.can_create_work_orders:
            return _error(403, "Access denied")
        if (
            "UNLIMITED_ACTIVE_WORK_ORDERS" not in self.entitlements
            and self._active() >= FREE_ACTIVE_WORK_ORDERS
        ):
            return _error(
                403,
                "You need a license to add a new work order. Free Limit of "
                f"{FREE_ACTIVE_WORK_ORDERS} incomplete work orders reached",
            )
        asset = None
        if body.get("asset") is not None:
            asset = self.assets.get(int(body["asset"].get("id", 0)))
            if asset is None:
                return _error(
                    500,
                    "could not execute statement [ERROR: insert or update on table "
                    '"work_order" violates foreign key constraint: Key (asset_id) is not '
                    'present in table "asset".]',
                )
        files = []
        for ref in body.get("files") or []:
            stored = self.files.get(int(ref.get("id", 0)))
            if stored is None:
                return _error(500, f"Unable to find com.grash.model.File with id {ref.get('id')}")
            files.append({k: v for k, v in stored.items() if k != "data"})
        description = clean_text(body.get("description"))
        if isinstance(description, str) and len(description) > DESCRIPTION_COLUMN:
            return _error(
                500,
                "could not execute statement [ERROR: value too long for type character "
                f"varying({DESCRIPTION_COLUMN})]",
            )
        due = body.get("dueDate")
        wid = next(self._wo_ids)
        now = _timestamp(datetime.now(UTC))
        self.work_orders[wid] = {
            "id": wid,
            "customId": f"WO{wid:06d}",
            "status": "OPEN",
            "createdAt": now,
            "updatedAt": now,
            "title": clean_text(body["title"]),
            "description": description,
            "priority": priority,
            # A java.util.Date: a day sent comes back as that midnight, UTC.
            "dueDate": None if not due else _timestamp(datetime.fromisoformat(str(due)[:10])),
            "asset": None
            if asset is None
            else {
                "id": asset["id"],
                "name": asset["name"],
                "customId": asset["customId"],
                "parentId": None,
                "locationId": None,
            },
            "files": files,
            "archived": False,
        }
        return JSONResponse(self.work_orders[wid])  # 200, not 201

    async def _get(self, request: Request) -> Response:
        raw = request.path_params["wo_id"]
        if not raw.isdigit():
            return _error(
                500,
                f"Method parameter 'id': Failed to convert value of type 'java.lang.String' "
                f"to required type 'java.lang.Long'; For input string: \"{raw}\"",
            )
        wo = self.work_orders.get(int(raw))
        if wo is None:
            return _error(404, "Work Order not found")
        return JSONResponse(wo)

    @staticmethod
    def _matches(item: dict[str, Any], flt: dict[str, Any]) -> bool:
        value = item.get(str(flt.get("field")))
        wanted = flt.get("value")
        operation = flt.get("operation")
        if operation == "eq":
            return bool(value == wanted)
        if operation == "cn":
            return isinstance(value, str) and like(_fold(value), f"%{_fold(str(wanted))}%")
        raise ValueError(str(flt.get("field")))

    def _page(self, items: list[dict[str, Any]], body: dict[str, Any]) -> Response:
        try:
            hits = [
                i for i in items if all(self._matches(i, f) for f in body.get("filterFields") or [])
            ]
        except ValueError as exc:
            return _error(400, f"Invalid search field: {exc}")
        reverse = body.get("direction", "ASC") == "DESC"
        hits.sort(key=lambda i: i.get(str(body.get("sortField") or "id")) or 0, reverse=reverse)
        number, size = int(body.get("pageNum", 0)), int(body.get("pageSize", 10))
        content = hits[number * size : (number + 1) * size]
        pages = (len(hits) + size - 1) // size
        return JSONResponse(
            {
                "content": content,
                "totalElements": len(hits),
                "totalPages": pages,
                "number": number,
                "size": size,
                "numberOfElements": len(content),
                "first": number == 0,
                "last": number >= pages - 1,
                "empty": not content,
            }
        )

    async def _search(self, request: Request) -> Response:
        return self._page(list(self.work_orders.values()), await request.json())

    async def _search_assets(self, request: Request) -> Response:
        return self._page(list(self.assets.values()), await request.json())

    def app(self) -> Starlette:
        open_paths = {"/auth/signin", "/auth/refresh"}

        def guarded(handler: Any) -> Any:
            async def endpoint(request: Request) -> Response:
                if request.url.path not in open_paths and not self._authorised(request):
                    response: Response = Response(status_code=403)  # Atlas's JWT filter
                else:
                    response = await handler(request)
                self.requests.append((request.method, request.url.path, response.status_code))
                return response

            return endpoint

        return Starlette(
            routes=[
                Route("/auth/signin", guarded(self._signin), methods=["POST"]),
                Route("/auth/refresh", guarded(self._refresh_pair), methods=["POST"]),
                Route("/files/upload", guarded(self._upload), methods=["POST"]),
                Route("/assets", guarded(self._create_asset), methods=["POST"]),
                Route("/assets/search", guarded(self._search_assets), methods=["POST"]),
                Route("/work-orders", guarded(self._create), methods=["POST"]),
                Route("/work-orders/search", guarded(self._search), methods=["POST"]),
                Route("/work-orders/{wo_id}", guarded(self._get), methods=["GET"]),
            ]
        )
