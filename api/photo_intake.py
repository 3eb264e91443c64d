"""Accepting a photo: check it, store it, record it, start its workflow — in that order.

Shared by `POST /photos` and WhatsApp media messages. A photo is "accepted" only once it is on
disk (fsynced), has its `photos` row and its workflow has started; from then on the workflow
always ends in a work order, so an accepted photo is never lost. The ids are deterministic
for WhatsApp (from Twilio's MessageSid), so a webhook delivered twice files one photo.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import dataclass

import asyncpg
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from factorylm.models.photos import PhotoIntakeInput, PhotoSource
from factorylm.photos.images import check_image, limit_decodes
from factorylm.photos.store import PhotoStore
from factorylm.settings import Settings
from workflows.photo_intake import PhotoIntakeWorkflow

log = logging.getLogger(__name__)


class IntakeUnavailable(RuntimeError):
    """The photo was stored but its workflow could not start; the sender should resend."""


@dataclass(frozen=True)
class Accepted:
    photo_id: str
    workflow_id: str
    content_type: str
    size_bytes: int
    duplicate: bool


def new_photo_id(dedup: str | None = None) -> str:
    if dedup:
        return "ph-" + uuid.uuid5(uuid.NAMESPACE_URL, f"factorylm-photo:{dedup}").hex[:16]
    return "ph-" + uuid.uuid4().hex[:16]


def photo_workflow_id(photo_id: str) -> str:
    return f"photo-intake-{photo_id}"


class PhotoIntake:
    def __init__(
        self, settings: Settings, client: Client, pool: asyncpg.Pool, store: PhotoStore
    ) -> None:
        self._settings = settings
        self._client = client
        self._pool = pool
        self.store = store
        limit_decodes(settings.photo_decode_concurrency)

    async def accept(
        self,
        data: bytes,
        *,
        source: PhotoSource,
        asset_id: str | None = None,
        note: str = "",
        sender: str | None = None,
        dedup: str | None = None,
    ) -> Accepted:
        """Raise PhotoRejected (415/413) or IntakeUnavailable; otherwise the photo is safe."""
        checked = await asyncio.to_thread(
            check_image, data, self._settings.photo_max_bytes, self._settings.photo_max_pixels
        )
        photo_id = new_photo_id(dedup)
        workflow_id = photo_workflow_id(photo_id)
        ref = await self.store.put(photo_id, data, checked.content_type)
        inserted = await self._pool.fetchval(
            """INSERT INTO photos (id, workflow_id, source, sender, note, storage, location,
                   content_type, size_bytes, sha256, width, height)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
               ON CONFLICT (id) DO NOTHING RETURNING 1""",
            photo_id,
            workflow_id,
            source.value,
            sender,
            note,
            ref.storage,
            ref.location,
            ref.content_type,
            ref.size_bytes,
            hashlib.sha256(data).hexdigest(),
            checked.width,
            checked.height,
        )
        request = PhotoIntakeInput(
            photo=ref,
            source=source,
            asset_id=asset_id or None,
            note=note,
            reply_to=sender,
            asset_wait_s=self._settings.photo_asset_wait_s,
        )
        try:
            await self._client.start_workflow(
                PhotoIntakeWorkflow.run,
                request,
                id=workflow_id,
                task_queue=self._settings.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
        except (RPCError, RuntimeError) as exc:
            log.error("photo %s stored but its workflow did not start: %s", photo_id, exc)
            raise IntakeUnavailable(
                f"photo {photo_id} could not be processed now (workflow service unavailable); "
                "send it again in a minute"
            ) from exc
        log.info("photo %s accepted from %s (%s)", photo_id, sender or source.value, workflow_id)
        return Accepted(photo_id, workflow_id, ref.content_type, ref.size_bytes, inserted is None)
