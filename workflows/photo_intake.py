"""PhotoIntakeWorkflow: a technician's photo becomes a work order on the right machine.

Workflow id `photo-intake-{photo_id}`. The photo stays in the photo store; this workflow
carries its reference. Every path ends in a work order: a photo no model could analyse is
filed "needs manual review", one whose machine nobody named is filed without an asset. The
answer to "Which machine is this?" arrives as the `provide_asset` update, accepted only from
the person asked and only for a known asset tag.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows.replies import replied_within

with workflow.unsafe.imports_passed_through():
    from activities.cmms import CmmsActivities
    from activities.notify import NotifyActivities
    from activities.photos import PhotoActivities
    from factorylm.models.messages import SendMessageInput
    from factorylm.models.photos import (
        AnalysePhotoInput,
        AskForAssetInput,
        AssetAnswer,
        AssetResolution,
        CloseAssetQuestionInput,
        FindingSeverity,
        PhotoAnalysis,
        PhotoIntakeInput,
        PhotoIntakeResult,
        RecordPhotoInput,
        ResolveAssetInput,
        unanalysed_finding,
    )
    from factorylm.models.work_orders import (
        AttachmentRef,
        OpenWorkOrderInput,
        WorkOrderPriority,
        WorkOrderRef,
    )
    from factorylm.photos.assets import exact_asset
    from factorylm.temporal_client import ASSET_ID

_SHORT = timedelta(seconds=30)
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
# Vision tries Gemini (retried), then Claude, inside one attempt; a few attempts cover a
# worker restart, after which the photo is filed for a person to review.
_VISION_TIMEOUT = timedelta(minutes=5)
_VISION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_attempts=3,
    non_retryable_error_types=["PhotoMissing"],
)
_PRIORITY = {
    FindingSeverity.LOW: WorkOrderPriority.LOW,
    FindingSeverity.MEDIUM: WorkOrderPriority.MEDIUM,
    FindingSeverity.HIGH: WorkOrderPriority.HIGH,
    FindingSeverity.CRITICAL: WorkOrderPriority.HIGH,
}


def summary_of(analysis: PhotoAnalysis) -> str:
    f = analysis.finding
    text = f"{f.equipment_type}: {f.visible_issue} (severity {f.severity.value}). Suggested: {f.suggested_work}"
    if analysis.needs_manual_review:
        text += f" NEEDS MANUAL REVIEW: {analysis.review_reason}."
    return text


@workflow.defn
class PhotoIntakeWorkflow:
    def __init__(self) -> None:
        self._status = "received"
        self._asked: str | None = None
        self._known: list[str] = []
        self._answer: AssetAnswer | None = None

    @workflow.run
    async def run(self, req: PhotoIntakeInput) -> PhotoIntakeResult:
        me = workflow.info().workflow_id
        photo_id = req.photo.photo_id
        self._set_status("analysing the photo")
        analysis = await self._analyse(me, req)

        self._set_status("identifying the machine")
        where: AssetResolution = await workflow.execute_activity_method(
            PhotoActivities.resolve_asset,
            ResolveAssetInput(
                photo_id=photo_id,
                explicit_asset_id=req.asset_id,
                note=req.note,
                asset_tag_text=analysis.finding.asset_tag_text,
                reply_to=req.reply_to,
            ),
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        asset_id, found_by = where.asset_id, where.how
        if asset_id is None and where.ask is not None:
            asset_id = await self._ask_for_asset(me, req, where, where.ask)
            found_by = "answer" if asset_id else "unresolved"
        if asset_id is not None:
            workflow.upsert_search_attributes([ASSET_ID.value_set(asset_id)])

        self._set_status("opening the work order")
        attachment: AttachmentRef = await workflow.execute_activity_method(
            PhotoActivities.photo_attachment,
            req.photo,
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        order: WorkOrderRef = await workflow.execute_activity_method(
            CmmsActivities.open_work_order,
            self._work_order(req, analysis, asset_id, found_by, attachment),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=_RETRY,
        )
        await workflow.execute_activity_method(
            PhotoActivities.record_photo,
            RecordPhotoInput(
                photo_id=photo_id,
                status="completed",
                asset_id=asset_id,
                analysis=analysis,
                work_order_id=order.id,
            ),
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        summary = summary_of(analysis)
        if req.reply_to:
            where_text = f" on {asset_id}" if asset_id else " (machine not identified)"
            await workflow.execute_activity_method(
                NotifyActivities.send_message,
                SendMessageInput(
                    dedup_key=f"photo-result/{photo_id}",
                    recipients=[req.reply_to],
                    body=f"FactoryLM: work order {order.id} opened from your photo{where_text}.\n"
                    f"{summary}",
                    workflow_id=me,
                ),
                start_to_close_timeout=_SHORT,
                retry_policy=_RETRY,
            )
        self._set_status(f"completed: work order {order.id}")
        return PhotoIntakeResult(
            photo_id=photo_id,
            status="completed",
            asset_id=asset_id,
            asset_found_by=found_by,
            work_order_id=order.id,
            needs_manual_review=analysis.needs_manual_review,
            summary=summary,
        )

    async def _analyse(self, me: str, req: PhotoIntakeInput) -> PhotoAnalysis:
        try:
            result: PhotoAnalysis = await workflow.execute_activity_method(
                PhotoActivities.analyse_photo,
                AnalysePhotoInput(workflow_id=me, photo=req.photo, note=req.note),
                start_to_close_timeout=_VISION_TIMEOUT,
                retry_policy=_VISION_RETRY,
            )
            return result
        except ActivityError as exc:
            why = str(exc.cause) if exc.cause else str(exc)
            workflow.logger.warning("photo %s not analysed: %s", req.photo.photo_id, why)
            return PhotoAnalysis(
                finding=unanalysed_finding(req.note, "analysis failed"),
                generated_by="none",
                needs_manual_review=True,
                review_reason=f"the analysis failed: {why}"[:500],
            )

    async def _ask_for_asset(
        self, me: str, req: PhotoIntakeInput, where: AssetResolution, recipient: str
    ) -> str | None:
        photo_id = req.photo.photo_id
        self._known = where.known_assets
        self._asked = recipient
        await workflow.execute_activity_method(
            PhotoActivities.ask_for_asset,
            AskForAssetInput(
                workflow_id=me,
                photo_id=photo_id,
                recipient=recipient,
                question=where.problem,
            ),
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        minutes = max(1, round(req.asset_wait_s / 60))
        await workflow.execute_activity_method(
            NotifyActivities.send_message,
            SendMessageInput(
                dedup_key=f"photo-asset-question/{photo_id}",
                recipients=[recipient],
                body=(
                    f"FactoryLM: which machine is this? Reply with the asset tag "
                    f"(photo {photo_id}; {where.problem}). "
                    f"Known tags: {', '.join(where.known_assets)}. "
                    f"Without an answer in {minutes} min the work order is opened without one."
                ),
                workflow_id=me,
            ),
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        self._set_status(f"waiting for {recipient} to name the machine")
        await replied_within(
            lambda: self._answer is not None, req.asset_wait_s, "asset question timer"
        )
        answer = self._answer.asset_id if self._answer else None
        self._asked = None
        await workflow.execute_activity_method(
            PhotoActivities.close_asset_question,
            CloseAssetQuestionInput(photo_id=photo_id, answer=answer),
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        return answer

    def _work_order(
        self,
        req: PhotoIntakeInput,
        analysis: PhotoAnalysis,
        asset_id: str | None,
        found_by: str,
        attachment: AttachmentRef,
    ) -> OpenWorkOrderInput:
        f = analysis.finding
        flag = "[needs manual review] " if analysis.needs_manual_review else ""
        subject = asset_id or f.equipment_type
        title = f"{flag}Photo: {f.visible_issue} — {subject}"
        if len(title) > 160:
            title = title[:157] + "..."
        lines = [
            f"Reported by photo {req.photo.photo_id} ({req.source.value}"
            + (f" from {req.reply_to}" if req.reply_to else "")
            + ").",
        ]
        if req.note.strip():
            lines.append(f"Technician's note: {req.note.strip()}")
        lines += [
            f"Equipment: {f.equipment_type}",
            f"Visible issue: {f.visible_issue}",
            f"Severity: {f.severity.value}",
            f"Suggested work: {f.suggested_work}",
            f"Confidence: {f.confidence:.0%} ({analysis.generated_by})",
        ]
        if f.asset_tag_text:
            lines.append(f"Tag read in the photo: {f.asset_tag_text}")
        if asset_id:
            lines.append(f"Asset: {asset_id} (identified by {found_by})")
        else:
            lines.append("Asset: not identified — set it on this work order.")
        if analysis.needs_manual_review:
            lines.append(f"NEEDS MANUAL REVIEW: {analysis.review_reason}")
        return OpenWorkOrderInput(
            external_key=f"photo/{req.photo.photo_id}",
            title=title,
            description="\n".join(lines),
            priority=WorkOrderPriority.MEDIUM
            if analysis.needs_manual_review
            else _PRIORITY[f.severity],
            asset_id=asset_id,
            attachments=[attachment],
        )

    def _set_status(self, status: str) -> None:
        self._status = status
        workflow.set_current_details(status)

    @workflow.update
    def provide_asset(self, answer: AssetAnswer) -> str:
        found = exact_asset(answer.asset_id, self._known)
        assert found is not None  # the validator accepted it
        self._answer = AssetAnswer(asset_id=found, answered_by=answer.answered_by)
        return found

    @provide_asset.validator
    def _check_asset(self, answer: AssetAnswer) -> None:
        if self._asked is None or self._answer is not None:
            raise ValueError("no question about this photo's machine is open")
        if answer.answered_by != self._asked:
            raise ValueError(f"the question was sent to {self._asked}, not {answer.answered_by}")
        if exact_asset(answer.asset_id, self._known) is None:
            raise ValueError(
                f"{answer.asset_id!r} is not a known asset tag; known: {', '.join(self._known)}"
            )

    @workflow.query
    def status(self) -> str:
        return self._status
