"""The photo side of the WhatsApp webhook: a media message files a photo, and a reply to
"Which machine is this?" names the machine for the waiting photo workflow."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import httpx
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.operations import UPDATE_TIMEOUT_S
from api.photo_intake import IntakeUnavailable, PhotoIntake
from factorylm.models.photos import AssetAnswer, PhotoSource
from factorylm.photos.images import PhotoRejected
from factorylm.photos.media import MediaUnavailable, fetch_media
from factorylm.settings import Settings, reveal
from workflows.photo_intake import PhotoIntakeWorkflow

log = logging.getLogger(__name__)


class WhatsAppPhotos:
    def __init__(
        self, settings: Settings, client: Client, pool: asyncpg.Pool, intake: PhotoIntake
    ) -> None:
        self._settings = settings
        self._client = client
        self._pool = pool
        self._intake = intake

    async def media_message(self, sender: str, form: dict[str, str]) -> str:
        """File every image of the message; the answer says what happened to each."""
        count = int(form.get("NumMedia", "0") or 0)
        caption = form.get("Body", "").strip()
        message_sid = form.get("MessageSid", "")
        filed: list[str] = []
        refused: list[str] = []
        for i in range(count):
            url = form.get(f"MediaUrl{i}", "")
            kind = form.get(f"MediaContentType{i}", "")
            if not url:
                continue
            if kind and not kind.startswith("image/"):
                refused.append(f"a {kind} file is not a photo")
                continue
            try:
                data = await fetch_media(
                    url,
                    self._settings.twilio_account_sid,
                    reveal(self._settings.twilio_auth_token),
                    self._settings.photo_max_bytes,
                )
                accepted = await self._intake.accept(
                    data,
                    source=PhotoSource.WHATSAPP,
                    note=caption,
                    sender=sender,
                    dedup=f"{message_sid}/{i}" if message_sid else None,
                )
            except PhotoRejected as exc:
                refused.append(str(exc))
                continue
            except (MediaUnavailable, httpx.HTTPError) as exc:
                log.warning("could not fetch WhatsApp media %s: %s", url, exc)
                refused.append("the photo could not be downloaded from WhatsApp; send it again")
                continue
            except IntakeUnavailable as exc:
                refused.append(str(exc))
                continue
            filed.append(accepted.photo_id)
        parts = []
        if filed:
            parts.append(
                f"Photo received ({', '.join(filed)}). FactoryLM is analysing it; "
                "you will get the work order number here."
            )
        if refused:
            parts.append("Not filed: " + "; ".join(refused) + ".")
        return " ".join(parts) or "No photo was attached. Nothing was filed."

    async def asset_answer(self, sender: str, text: str) -> str | None:
        """The answer to an open "Which machine is this?", or None when none is open."""
        row = await self._pool.fetchrow(
            """SELECT * FROM asset_questions WHERE recipient = $1 AND status = 'waiting'
               ORDER BY asked_at DESC LIMIT 1""",
            sender,
        )
        if row is None:
            return None
        handle = self._client.get_workflow_handle(row["workflow_id"])
        answer = AssetAnswer(asset_id=text.strip() or "?", answered_by=sender)
        try:
            asset = await asyncio.wait_for(
                handle.execute_update(PhotoIntakeWorkflow.provide_asset, answer), UPDATE_TIMEOUT_S
            )
        except TimeoutError:
            return f"Photo {row['photo_id']}: FactoryLM could not confirm that now; send it again."
        except WorkflowUpdateFailedError as exc:
            reason = str(exc.cause) if exc.cause else "refused"
            return f"Photo {row['photo_id']}: {reason}. Reply with the asset tag."
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return None
        return f"Thanks — photo {row['photo_id']} is filed under {asset}; the work order follows."
