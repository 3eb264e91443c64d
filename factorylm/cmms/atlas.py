"""Atlas CMMS over its REST API.

Sign in with POST /auth/signin for a bearer token (signed in again when a call answers 401:
tokens expire); images go up first with POST /files/upload and are referenced by id in
POST /work-orders. Atlas has no field for our idempotency key, so the key is written as a
marker line in the description, looked up locally (cmms_links) and then remotely
(POST /work-orders/search) before anything is created.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from factorylm.models.work_orders import AttachmentRef, OpenWorkOrderInput, WorkOrderRef

log = logging.getLogger(__name__)


class AtlasError(RuntimeError):
    """Atlas answered with an error; the message has its status and reply."""


def marker(external_key: str) -> str:
    return f"[factorylm:{external_key}]"


class AtlasCmms:
    system = "atlas"

    def __init__(
        self, pool: asyncpg.Pool, base_url: str, email: str, password: str, *, timeout_s: float = 15
    ) -> None:
        self._pool = pool
        self._email = email
        self._password = password
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self._token: str | None = None
        self.sign_ins = 0

    async def close(self) -> None:
        await self._http.aclose()

    async def _sign_in(self) -> str:
        response = await self._http.post(
            "/auth/signin",
            json={"email": self._email, "password": self._password, "type": "client"},
        )
        if response.status_code != 200:
            raise AtlasError(
                f"Atlas sign-in answered {response.status_code}: {response.text[:200]}"
            )
        self.sign_ins += 1
        token = response.json().get("accessToken")
        if not token:
            raise AtlasError("Atlas sign-in returned no accessToken")
        self._token = str(token)
        return self._token

    async def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        token = self._token or await self._sign_in()
        for attempt in range(2):
            response = await self._http.request(
                method, path, headers={"Authorization": f"Bearer {token}"}, **kw
            )
            if response.status_code == 401 and attempt == 0:
                token = await self._sign_in()  # expired token: sign in once more
                continue
            break
        if response.status_code >= 400:
            raise AtlasError(
                f"Atlas {method} {path} answered {response.status_code}: {response.text[:200]}"
            )
        return response

    async def _find(self, external_key: str) -> str | None:
        local = await self._pool.fetchval(
            "SELECT remote_id FROM cmms_links WHERE external_key = $1 AND system = $2",
            external_key,
            self.system,
        )
        if local is not None:
            return str(local)
        found = await self._call(
            "POST",
            "/work-orders/search",
            json={
                "filterFields": [
                    {"field": "description", "operation": "cn", "value": marker(external_key)}
                ],
                "pageNum": 0,
                "pageSize": 1,
            },
        )
        content = found.json().get("content") or []
        return str(content[0]["id"]) if content else None

    async def _upload(self, attachment: AttachmentRef) -> int:
        data = await asyncio.to_thread(Path(attachment.path).read_bytes)
        response = await self._call(
            "POST",
            "/files/upload",
            files={"files": (attachment.name, data, attachment.content_type)},
            data={
                "folder": "factorylm",
                "type": "IMAGE" if attachment.content_type.startswith("image/") else "OTHER",
            },
        )
        uploaded = response.json()
        first = uploaded[0] if isinstance(uploaded, list) else uploaded
        return int(first["id"])

    async def _link(self, external_key: str, remote_id: str) -> None:
        await self._pool.execute(
            """INSERT INTO cmms_links (external_key, system, remote_id) VALUES ($1, $2, $3)
               ON CONFLICT (external_key) DO NOTHING""",
            external_key,
            self.system,
            remote_id,
        )

    async def open(self, req: OpenWorkOrderInput) -> WorkOrderRef:
        existing = await self._find(req.external_key)
        if existing is not None:
            await self._link(req.external_key, existing)
            return WorkOrderRef(id=f"ATLAS-{existing}", created=False, system=self.system)
        file_ids = [await self._upload(a) for a in req.attachments]
        body: dict[str, Any] = {
            "title": req.title,
            "description": f"{req.description}\n\n{marker(req.external_key)}",
            "priority": req.priority.value,
            "files": [{"id": fid} for fid in file_ids],
        }
        if req.due_date is not None:
            body["dueDate"] = req.due_date.isoformat()
        created = (await self._call("POST", "/work-orders", json=body)).json()
        remote_id = str(created["id"])
        await self._link(req.external_key, remote_id)
        log.info("opened Atlas work order %s for %s", remote_id, req.external_key)
        return WorkOrderRef(id=f"ATLAS-{remote_id}", created=True, system=self.system)
