"""Atlas CMMS over its REST API, as the real server (Grashjs/cmms `api/`) behaves.

Sessions: POST /auth/signin gives an access token (a JWT, 30 min by default), a refresh token
(7 days, rotated on every use) and `expiresAt`. The server answers an expired, malformed or
revoked JWT with 403 and an empty body (a 401 only from some paths), so both mean "renew": the
client trades its refresh token at POST /auth/refresh and signs in again only when that is
refused. Renewals are serialised: a rotated refresh token presented twice is a reuse that the
server answers by revoking the account's sessions.

Idempotency: Atlas has no field for our key, so a marker is written as the description's last
line and looked up locally (cmms_links) and then remotely (POST /work-orders/search, `cn`)
before anything is created. Atlas HTML-cleans text on save (`&`, `<`, `>` come back escaped,
tags are dropped) and its `cn` is case- and accent-insensitive with `%` and `_` as wildcards,
so the marker is a hash of the key in lowercase hex between brackets: characters Atlas stores
verbatim and that match only themselves.

Refusals that only a person can lift (a licence entitlement, the free tier's 30 open work
orders or 50 assets, unconfigured file storage, a role without permission) raise
AtlasRefusedError, never retried; everything else (5xx, 429 rate limits, timeouts) raises
AtlasError, which the activity's retry policy retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from factorylm.cmms import CmmsRefusedError
from factorylm.models.work_orders import AttachmentRef, OpenWorkOrderInput, WorkOrderRef

log = logging.getLogger(__name__)

# WorkOrderBase.description's documented maxLength: what we send is cut to it, with a note.
DESCRIPTION_LIMIT = 10_000
# A token this close to its `expiresAt` is renewed before the call rather than after a 403.
_RENEW_EARLY = timedelta(seconds=30)
# Marker search: Atlas pages its answers; a hash marker matches one work order, a few pages
# bound the look when earlier ones were near-misses.
_SEARCH_PAGE = 10
_SEARCH_PAGES = 5


class AtlasError(RuntimeError):
    """Atlas answered with an error; the message has its status and the server's message."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AtlasRefusedError(AtlasError, CmmsRefusedError):
    """A refusal no retry changes: the licence, the free tier, storage, permissions."""

    def __init__(self, kind: str, message: str, status: int) -> None:
        CmmsRefusedError.__init__(self, "Atlas", kind, message)
        self.status = status


def marker(external_key: str) -> str:
    """`[factorylm-<32 hex>]`: brackets, a hyphen, digits and lowercase a–f only."""
    return f"[factorylm-{hashlib.sha256(external_key.encode()).hexdigest()[:32]}]"


def atlas_text(text: str) -> str:
    """Plain text as Atlas stores it after Jsoup's cleaning (markup-free text only): the
    characters it escapes. Used to budget the description and to compare asset names."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\u00a0", "&nbsp;")
    )


def _stored_length(char: str) -> int:
    return len(atlas_text(char))


def fit_description(text: str, tail: str, limit: int = DESCRIPTION_LIMIT) -> tuple[str, bool]:
    """The description with `tail` (the marker) last, within `limit` characters as Atlas will
    store them; a longer text is cut at a line end where one is near, with a note saying so."""
    if len(atlas_text(text)) + len(tail) <= limit:
        return text + tail, False
    total = len(text)
    note = (
        f"\n\n[FactoryLM: cut to fit Atlas's {limit}-character description; the full text "
        f"({total} characters) is kept in FactoryLM with this work order.]"
    )
    budget = limit - len(tail) - len(note) - 20  # 20: the kept count may gain digits
    kept, used = 0, 0
    for char in text:
        used += _stored_length(char)
        if used > budget:
            break
        kept += 1
    cut = text[:kept]
    newline = cut.rfind("\n")
    if newline > kept * 0.8:  # a whole last line reads better than half of one
        cut = cut[:newline]
    note = note.replace(f"({total} characters)", f"({len(cut)} of {total} characters shown)")
    return cut + note + tail, True


def _message(response: httpx.Response) -> str:
    """The server's message: `{"success": false, "message": …}`, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])[:500]
    return response.text[:200]


def _auth_failed(response: httpx.Response) -> bool:
    # 403 with a message is a refusal of this request (licence, permission); 403 with an
    # empty body is the JWT filter rejecting the token itself.
    return response.status_code == 401 or (
        response.status_code == 403 and not response.content.strip()
    )


def _refusal(response: httpx.Response) -> AtlasRefusedError | None:
    message = _message(response)
    lowered = message.lower()
    if response.status_code == 403 and message:
        if "free limit" in lowered:
            return AtlasRefusedError("free tier", message, 403)
        if "license" in lowered or "licence" in lowered:
            return AtlasRefusedError("licence", message, 403)
        return AtlasRefusedError("forbidden", message, 403)
    if response.status_code == 500 and "not configured" in lowered:
        return AtlasRefusedError("storage", message, 500)
    return None


def _asset_gone(exc: AtlasError) -> bool:
    text = str(exc).lower()
    return exc.status == 500 and "foreign key" in text and "asset" in text


def _expiry(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class AtlasCmms:
    system = "atlas"

    def __init__(
        self,
        pool: asyncpg.Pool,
        base_url: str,
        email: str,
        password: str,
        *,
        create_assets: bool = False,
        timeout_s: float = 15,
    ) -> None:
        self._pool = pool
        self._email = email
        self._password = password
        self._create_assets = create_assets
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self._token: str | None = None
        self._refresh_token: str | None = None
        self._expires_at: datetime | None = None
        self._auth_lock = asyncio.Lock()
        self._assets: dict[str, int] = {}
        # Files uploaded by an attempt whose work order was not created: a retry in this
        # process reuses them instead of uploading (and rate-limiting) them again.
        self._uploaded: dict[tuple[str, str], int] = {}
        self.sign_ins = 0
        self.refreshes = 0
        # Why an asset could not be created, by FactoryLM asset id (said in the description).
        self.asset_refusals: dict[str, str] = {}

    async def close(self) -> None:
        await self._http.aclose()

    # -- session ---------------------------------------------------------------------------
    def _accept(self, body: Any) -> str:
        token = body.get("accessToken") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise AtlasError("Atlas returned no accessToken")
        self._token = token
        refresh = body.get("refreshToken")
        self._refresh_token = refresh if isinstance(refresh, str) and refresh else None
        self._expires_at = _expiry(body.get("expiresAt"))
        return token

    async def _sign_in(self) -> str:
        response = await self._http.post(
            "/auth/signin",
            json={"email": self._email, "password": self._password, "type": "client"},
        )
        if response.status_code != 200:
            raise AtlasError(
                f"Atlas sign-in answered {response.status_code}: {_message(response)}",
                response.status_code,
            )
        self.sign_ins += 1
        return self._accept(response.json())

    async def _refresh(self) -> str | None:
        if self._refresh_token is None:
            return None
        response = await self._http.post(
            "/auth/refresh", json={"refreshToken": self._refresh_token}
        )
        self._refresh_token = None  # used: rotated on success, dead on refusal
        if response.status_code != 200:
            log.info(
                "Atlas refused the refresh token (%s: %s); signing in again",
                response.status_code,
                _message(response),
            )
            return None
        self.refreshes += 1
        return self._accept(response.json())

    def _expiring(self) -> bool:
        return self._expires_at is not None and datetime.now(UTC) >= self._expires_at - _RENEW_EARLY

    async def _renew(self, stale: str | None) -> str:
        async with self._auth_lock:
            if self._token is not None and self._token != stale and not self._expiring():
                return self._token  # renewed by another call while this one waited
            return await self._refresh() or await self._sign_in()

    async def _current(self) -> str:
        if self._token is None or self._expiring():
            return await self._renew(self._token)
        return self._token

    async def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        token = await self._current()
        for attempt in range(2):
            response = await self._http.request(
                method, path, headers={"Authorization": f"Bearer {token}"}, **kw
            )
            if attempt == 0 and _auth_failed(response):
                token = await self._renew(token)
                continue
            break
        if response.status_code >= 400:
            refused = _refusal(response)
            if refused is not None:
                raise refused
            raise AtlasError(
                f"Atlas {method} {path} answered {response.status_code}: {_message(response)}",
                response.status_code,
            )
        return response

    # -- lookups ---------------------------------------------------------------------------
    async def _find(self, external_key: str) -> dict[str, Any] | None:
        mark = marker(external_key)
        for page in range(_SEARCH_PAGES):
            found = (
                await self._call(
                    "POST",
                    "/work-orders/search",
                    json={
                        "filterFields": [
                            {"field": "description", "operation": "cn", "value": mark}
                        ],
                        "pageNum": page,
                        "pageSize": _SEARCH_PAGE,
                        "sortField": "id",
                        "direction": "ASC",
                    },
                )
            ).json()
            for wo in found.get("content") or []:
                # `cn` is a case-insensitive LIKE: only the exact marker is ours.
                if mark in str(wo.get("description") or ""):
                    return dict(wo)
            if found.get("last", True):
                break
        return None

    async def asset(self, asset_id: str) -> int | None:
        """The Atlas asset for a FactoryLM asset id: remembered, else found by name, else
        created (when configured); None when there is none and creating is off."""
        if asset_id in self._assets:
            return self._assets[asset_id]
        known = await self._pool.fetchval(
            "SELECT remote_id FROM cmms_assets WHERE system = $1 AND asset_id = $2",
            self.system,
            asset_id,
        )
        if known is not None:
            self._assets[asset_id] = int(known)
            return int(known)
        name = atlas_text(asset_id)
        found = (
            await self._call(
                "POST",
                "/assets/search",
                json={
                    "filterFields": [{"field": "name", "operation": "eq", "value": name}],
                    "pageNum": 0,
                    "pageSize": _SEARCH_PAGE,
                    "sortField": "id",
                    "direction": "ASC",
                },
            )
        ).json()
        matches = [
            a for a in found.get("content") or [] if a.get("name") == name and not a.get("archived")
        ]
        created = False
        if matches:
            remote = int(matches[0]["id"])
        elif self._create_assets:
            try:
                made = await self._call(
                    "POST",
                    "/assets",
                    json={"name": asset_id, "description": f"FactoryLM asset {asset_id}"},
                )
            except AtlasRefusedError as refused:
                # The free tier's 50 assets, say: the work order itself may still go in,
                # naming the asset in its text; the next one tries again.
                log.warning("Atlas refused to create asset %r: %s", asset_id, refused.message)
                self.asset_refusals[asset_id] = refused.message
                return None
            remote, created = int(made.json()["id"]), True
            log.info("created Atlas asset %s for %s", remote, asset_id)
        else:
            log.warning(
                "no Atlas asset named %r: the work order is opened without one "
                "(FACTORYLM_ATLAS_CREATE_ASSETS=true creates it)",
                asset_id,
            )
            return None
        stored = await self._pool.fetchval(
            """INSERT INTO cmms_assets (system, asset_id, remote_id, created)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (system, asset_id) DO UPDATE SET system = EXCLUDED.system
               RETURNING remote_id""",
            self.system,
            asset_id,
            str(remote),
            created,
        )
        self._assets[asset_id] = int(stored)
        return int(stored)

    async def _forget_asset(self, asset_id: str) -> None:
        self._assets.pop(asset_id, None)
        await self._pool.execute(
            "DELETE FROM cmms_assets WHERE system = $1 AND asset_id = $2", self.system, asset_id
        )

    # -- writes ----------------------------------------------------------------------------
    async def _upload(self, external_key: str, attachment: AttachmentRef) -> int:
        done = self._uploaded.get((external_key, attachment.path))
        if done is not None:
            return done
        data = await asyncio.to_thread(Path(attachment.path).read_bytes)
        response = await self._call(
            "POST",
            "/files/upload",
            files={"files": (attachment.name, data, attachment.content_type)},
            data={
                "folder": "factorylm",
                # Required by the server (500 without it); "false": shown on the work order.
                "hidden": "false",
                # FileType has only these two.
                "type": "IMAGE" if attachment.content_type.startswith("image/") else "OTHER",
            },
        )
        uploaded = response.json()
        first = uploaded[0] if isinstance(uploaded, list) else uploaded
        file_id = int(first["id"])
        self._uploaded[(external_key, attachment.path)] = file_id
        return file_id

    async def _link(
        self,
        req: OpenWorkOrderInput,
        remote: dict[str, Any],
        remote_asset: int | None,
        truncated: bool,
    ) -> str:
        remote_id = str(remote["id"])
        await self._pool.execute(
            """INSERT INTO cmms_links (external_key, system, remote_id, title, description,
                   priority, asset_id, remote_asset_id, remote_custom_id, truncated)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
               ON CONFLICT (external_key) DO NOTHING""",
            req.external_key,
            self.system,
            remote_id,
            req.title,
            req.description,
            req.priority.value,
            req.asset_id,
            None if remote_asset is None else str(remote_asset),
            remote.get("customId"),
            truncated,
        )
        return remote_id

    async def open(self, req: OpenWorkOrderInput) -> WorkOrderRef:
        local = await self._pool.fetchval(
            "SELECT remote_id FROM cmms_links WHERE external_key = $1 AND system = $2",
            req.external_key,
            self.system,
        )
        if local is not None:
            return WorkOrderRef(id=f"ATLAS-{local}", created=False, system=self.system)
        existing = await self._find(req.external_key)
        if existing is not None:
            # A crashed attempt created it but did not record the link.
            asset = (existing.get("asset") or {}).get("id")
            cut = "[FactoryLM: cut to fit" in str(existing.get("description") or "")
            remote_id = await self._link(req, existing, asset, truncated=cut)
            return WorkOrderRef(id=f"ATLAS-{remote_id}", created=False, system=self.system)
        asset_id = await self.asset(req.asset_id) if req.asset_id else None
        file_ids = [await self._upload(req.external_key, a) for a in req.attachments]
        text = req.description
        if req.asset_id and asset_id is None:
            why = self.asset_refusals.pop(req.asset_id, None)
            text += f"\nFactoryLM asset: {req.asset_id} (no Atlas asset of that name"
            text += f"; Atlas refused to create it: {why})" if why else ")"
        description, truncated = fit_description(text, f"\n\n{marker(req.external_key)}")
        body: dict[str, Any] = {
            "title": req.title,
            "description": description,
            "priority": req.priority.value,
            "files": [{"id": fid} for fid in file_ids],
        }
        if asset_id is not None:
            body["asset"] = {"id": asset_id}
        if req.due_date is not None:
            body["dueDate"] = req.due_date.isoformat()
        try:
            created = (await self._call("POST", "/work-orders", json=body)).json()
        except AtlasError as exc:
            if asset_id is None or not _asset_gone(exc):
                raise
            # The asset we remembered was deleted in Atlas (a foreign-key violation, 500):
            # forget it and look again, or every retry would fail the same way.
            log.warning("Atlas asset %s for %s is gone; looking again", asset_id, req.asset_id)
            await self._forget_asset(str(req.asset_id))
            asset_id = await self.asset(str(req.asset_id))
            if asset_id is None:
                body.pop("asset")
            else:
                body["asset"] = {"id": asset_id}
            created = (await self._call("POST", "/work-orders", json=body)).json()
        remote_id = await self._link(req, created, asset_id, truncated)
        for attachment in req.attachments:
            self._uploaded.pop((req.external_key, attachment.path), None)
        log.info("opened Atlas work order %s for %s", remote_id, req.external_key)
        return WorkOrderRef(id=f"ATLAS-{remote_id}", created=True, system=self.system)
