"""POST /photos (a technician's upload), GET /photos/{id}, GET /photos/{id}/image and
GET /assets/{id}/photos (a machine's photo history). Bearer-token auth like every operator
endpoint. Refusals say what to do: 401 token, 413 size, 415 not a readable image."""

from __future__ import annotations

import json

import asyncpg
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.auth import READ, UPLOAD, AccessGuard
from api.photo_intake import IntakeUnavailable, PhotoIntake
from factorylm.models.photos import PhotoRef, PhotoSource
from factorylm.photos.images import PhotoRejected, too_large
from factorylm.photos.store import PhotoStoreError
from factorylm.settings import Settings

# Multipart framing and the small text fields around the image.
_FORM_OVERHEAD = 64 * 1024


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _photo_json(row: asyncpg.Record) -> dict[str, object]:
    finding = row["finding"]
    return {
        "photo_id": row["id"],
        "workflow_id": row["workflow_id"],
        "status": row["status"],
        "source": row["source"],
        "asset_id": row["asset_id"],
        "work_order_id": row["work_order_id"],
        "content_type": row["content_type"],
        "size_bytes": row["size_bytes"],
        "width": row["width"],
        "height": row["height"],
        "note": row["note"],
        "analysis": None if finding is None else json.loads(finding),
        "received_at": row["received_at"].isoformat(),
        "completed_at": row["completed_at"].isoformat() if row["completed_at"] else None,
        "image_url": f"/photos/{row['id']}/image",
    }


class PhotoRoutes:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, intake: PhotoIntake) -> None:
        self._settings = settings
        self._pool = pool
        self._intake = intake

    async def upload(self, request: Request) -> Response:
        settings = self._settings
        declared = request.headers.get("content-length", "")
        limit = settings.photo_max_bytes
        if declared.isdigit() and int(declared) > limit + _FORM_OVERHEAD:
            return _error(413, str(too_large(int(declared), limit)))
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return _error(415, "send multipart/form-data with the photo in the 'image' field")
        async with request.form(max_files=1, max_fields=10) as form:
            image = form.get("image")
            if not isinstance(image, UploadFile):
                return _error(415, "no file in the 'image' field: attach the photo as 'image'")
            if image.size is not None and image.size > limit:
                return _error(413, str(too_large(image.size, limit)))
            data = await image.read(limit + 1)
            asset_id = str(form.get("asset_id") or "").strip() or None
            note = str(form.get("note") or "").strip()
            reply_to = str(form.get("reply_to") or "").strip() or None
        if len(data) > limit:
            return _error(413, str(too_large(len(data), limit)))
        if reply_to is not None and reply_to in settings.approvers:
            # An approver's next free text would be taken as this photo's answer: an upload
            # must not be able to steer what an approver's message means.
            return _error(
                422, "reply_to may not name an approver; leave it empty or name the sender"
            )
        try:
            accepted = await self._intake.accept(
                data, source=PhotoSource.UPLOAD, asset_id=asset_id, note=note, sender=reply_to
            )
        except PhotoRejected as exc:
            return _error(exc.status, str(exc))
        except IntakeUnavailable as exc:
            return _error(503, str(exc))
        return JSONResponse(
            {
                "photo_id": accepted.photo_id,
                "workflow_id": accepted.workflow_id,
                "status": "accepted",
                "content_type": accepted.content_type,
                "size_bytes": accepted.size_bytes,
                "status_url": f"/photos/{accepted.photo_id}",
            },
            status_code=202,
        )

    async def show(self, request: Request) -> Response:
        photo_id = request.path_params["photo_id"]
        row = await self._pool.fetchrow("SELECT * FROM photos WHERE id = $1", photo_id)
        if row is None:
            return _error(404, f"no photo {photo_id}")
        return JSONResponse(_photo_json(row))

    async def image(self, request: Request) -> Response:
        photo_id = request.path_params["photo_id"]
        row = await self._pool.fetchrow("SELECT * FROM photos WHERE id = $1", photo_id)
        if row is None:
            return _error(404, f"no photo {photo_id}")
        ref = PhotoRef(
            photo_id=row["id"],
            storage=row["storage"],
            location=row["location"],
            content_type=row["content_type"],
            size_bytes=row["size_bytes"],
        )
        try:
            data = await self._intake.store.read(ref)
        except (OSError, PhotoStoreError) as exc:
            return _error(500, f"photo {photo_id} is recorded but its file is unreadable: {exc}")
        return Response(data, media_type=row["content_type"])

    async def asset_history(self, request: Request) -> Response:
        asset_id = request.path_params["asset_id"]
        rows = await self._pool.fetch(
            "SELECT * FROM photos WHERE asset_id = $1 ORDER BY received_at DESC, id LIMIT 200",
            asset_id,
        )
        return JSONResponse({"asset_id": asset_id, "photos": [_photo_json(r) for r in rows]})

    def routes(self, guard: AccessGuard) -> list[Route]:
        return [
            Route("/photos", guard(self.upload, UPLOAD), methods=["POST"]),
            Route("/photos/{photo_id}", guard(self.show, READ)),
            Route("/photos/{photo_id}/image", guard(self.image, READ)),
            Route("/assets/{asset_id}/photos", guard(self.asset_history, READ)),
        ]
