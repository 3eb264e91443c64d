"""Photo intake activities: analyse the photo, find its machine, ask about it, record it.

Messages go out through the `send_message` activity and work orders through
`open_work_order`, like every other workflow's; these activities add what is photo-specific.
"""

from __future__ import annotations

import logging

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from factorylm.llm.usage import UsageRecorder
from factorylm.models.photos import (
    AnalysePhotoInput,
    AskForAssetInput,
    AssetResolution,
    CloseAssetQuestionInput,
    PhotoAnalysis,
    PhotoRef,
    RecordPhotoInput,
    ResolveAssetInput,
)
from factorylm.models.work_orders import AttachmentRef
from factorylm.photos.assets import asset_in_text, exact_asset
from factorylm.photos.store import PhotoStore, PhotoStoreError
from factorylm.photos.vision import Image, PhotoAnalyst
from factorylm.plant import Plant
from factorylm.settings import Settings

log = logging.getLogger(__name__)


class PhotoActivities:
    def __init__(
        self,
        pool: asyncpg.Pool,
        plant: Plant,
        settings: Settings,
        store: PhotoStore,
        analyst: PhotoAnalyst | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._store = store
        self._analyst = analyst or PhotoAnalyst(settings, UsageRecorder(pool))
        # The plant's machines are its assets; their ids are the tags technicians reply with.
        self.known_assets = [plc.id for plc in plant.plcs]

    @activity.defn(name="analyse_photo")
    async def analyse_photo(self, req: AnalysePhotoInput) -> PhotoAnalysis:
        try:
            data = await self._store.read(req.photo)
        except (OSError, PhotoStoreError) as exc:
            raise ApplicationError(
                f"photo {req.photo.photo_id} is not readable in the photo store: {exc}",
                type="PhotoMissing",
                non_retryable=True,
            ) from exc
        analysis = await self._analyst.analyse(
            Image(data, req.photo.content_type), req.note, self.known_assets, req.workflow_id
        )
        await self._pool.execute(
            "UPDATE photos SET finding = $2::jsonb, status = 'analysed' WHERE id = $1",
            req.photo.photo_id,
            analysis.model_dump_json(),
        )
        return analysis

    @activity.defn(name="resolve_photo_asset")
    async def resolve_asset(self, req: ResolveAssetInput) -> AssetResolution:
        known = self.known_assets
        ask = req.reply_to or (self._settings.approvers[0] if self._settings.approvers else None)
        if req.explicit_asset_id:
            if found := exact_asset(req.explicit_asset_id, known):
                return AssetResolution(asset_id=found, how="explicit", known_assets=known)
            return AssetResolution(
                asset_id=None,
                how="unresolved",
                known_assets=known,
                problem=f"{req.explicit_asset_id!r} is not an asset of this plant",
                ask=ask,
            )
        if found := asset_in_text(req.note, known):
            return AssetResolution(asset_id=found, how="note", known_assets=known)
        if found := asset_in_text(req.asset_tag_text, known):
            return AssetResolution(asset_id=found, how="nameplate", known_assets=known)
        problem = (
            f"the tag read in the photo ({req.asset_tag_text!r}) matches no asset"
            if req.asset_tag_text
            else "no asset tag was given or readable in the photo"
        )
        return AssetResolution(
            asset_id=None, how="unresolved", known_assets=known, problem=problem, ask=ask
        )

    @activity.defn(name="ask_for_photo_asset")
    async def ask_for_asset(self, req: AskForAssetInput) -> None:
        """Register the question so the recipient's reply reaches this workflow; the message
        itself goes out through send_message."""
        await self._pool.execute(
            """INSERT INTO asset_questions (photo_id, workflow_id, recipient) VALUES ($1, $2, $3)
               ON CONFLICT (photo_id) DO NOTHING""",
            req.photo_id,
            req.workflow_id,
            req.recipient,
        )
        await self._pool.execute(
            "UPDATE photos SET status = 'awaiting_asset' WHERE id = $1 AND status <> 'completed'",
            req.photo_id,
        )

    @activity.defn(name="close_photo_asset_question")
    async def close_asset_question(self, req: CloseAssetQuestionInput) -> None:
        await self._pool.execute(
            """UPDATE asset_questions SET status = $2, answer = $3
               WHERE photo_id = $1 AND status = 'waiting'""",
            req.photo_id,
            "answered" if req.answer else "expired",
            req.answer,
        )

    @activity.defn(name="photo_attachment")
    async def photo_attachment(self, ref: PhotoRef) -> AttachmentRef:
        path = self._store.local_path(ref)
        return AttachmentRef(name=path.name, content_type=ref.content_type, path=str(path))

    @activity.defn(name="record_photo")
    async def record_photo(self, req: RecordPhotoInput) -> None:
        await self._pool.execute(
            """UPDATE photos SET status = $2, asset_id = COALESCE($3, asset_id),
                   finding = COALESCE($4::jsonb, finding),
                   work_order_id = COALESCE($5, work_order_id),
                   completed_at = CASE WHEN $2 = 'completed' THEN now() ELSE completed_at END
               WHERE id = $1""",
            req.photo_id,
            req.status,
            req.asset_id,
            req.analysis.model_dump_json() if req.analysis else None,
            req.work_order_id,
        )
