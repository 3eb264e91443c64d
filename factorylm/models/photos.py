"""Inputs and outputs of PhotoIntakeWorkflow and its activities. Photos travel as references
into the photo store (`PhotoRef`), never as bytes: Temporal payloads stay small."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from factorylm.models.base import Model


class PhotoSource(StrEnum):
    UPLOAD = "upload"
    WHATSAPP = "whatsapp"


class FindingSeverity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class PhotoRef(Model):
    """Where a stored photo is: the store's kind and its location there (a path or a key)."""

    photo_id: str
    storage: str = Field(description="'filesystem' or 's3'")
    location: str
    content_type: str
    size_bytes: int


class VisionFinding(Model):
    """What the vision model must answer about one photo (the schema it is given)."""

    equipment_type: str = Field(
        min_length=1, description="what the equipment is, e.g. 'centrifugal pump', 'contactor'"
    )
    visible_issue: str = Field(
        min_length=1, description="the problem visible in the photo, or 'none visible'"
    )
    severity: FindingSeverity
    suggested_work: str = Field(min_length=1, description="what a technician should do")
    confidence: float = Field(ge=0.0, le=1.0, description="how sure, 0..1")
    asset_tag_text: str | None = Field(
        default=None,
        description="asset tag, nameplate or QR code text readable in the photo, verbatim; "
        "null when none is readable",
    )


class PhotoAnalysis(Model):
    finding: VisionFinding
    generated_by: str = Field(description="provider and model, or 'offline rules'")
    needs_manual_review: bool
    review_reason: str = ""


class AnalysePhotoInput(Model):
    workflow_id: str
    photo: PhotoRef
    note: str = ""


class ResolveAssetInput(Model):
    photo_id: str
    explicit_asset_id: str | None = None
    note: str = ""
    asset_tag_text: str | None = None
    reply_to: str | None = None


class AssetResolution(Model):
    asset_id: str | None
    how: str = Field(description="explicit, note, nameplate, answer, or unresolved")
    known_assets: list[str]
    problem: str = Field(default="", description="why it is unresolved, for the question")
    ask: str | None = Field(default=None, description="who is asked when it is unresolved")


class AskForAssetInput(Model):
    workflow_id: str
    photo_id: str
    recipient: str
    question: str


class CloseAssetQuestionInput(Model):
    photo_id: str
    answer: str | None


class AssetAnswer(Model):
    """A person's answer to "Which machine is this?"."""

    asset_id: str = Field(min_length=1)
    answered_by: str = Field(min_length=1)


class RecordPhotoInput(Model):
    photo_id: str
    status: str = Field(pattern="^(analysed|awaiting_asset|completed)$")
    asset_id: str | None = None
    analysis: PhotoAnalysis | None = None
    work_order_id: str | None = None


class PhotoIntakeInput(Model):
    photo: PhotoRef
    source: PhotoSource
    asset_id: str | None = None
    note: str = ""
    reply_to: str | None = Field(
        default=None, description="WhatsApp address told the result and asked about the asset"
    )
    asset_wait_s: float = Field(default=3600.0, gt=0)


class PhotoIntakeResult(Model):
    photo_id: str
    status: str
    asset_id: str | None
    asset_found_by: str
    work_order_id: str
    needs_manual_review: bool
    summary: str


def unanalysed_finding(note: str, why: str) -> VisionFinding:
    """The finding when no vision model answered: a person must look at the photo."""
    said = f" The technician wrote: {note.strip()}" if note.strip() else ""
    return VisionFinding(
        equipment_type="not identified",
        visible_issue=f"not analysed ({why}).{said}",
        severity=FindingSeverity.MEDIUM,
        suggested_work="Look at the attached photo, identify the issue and set the priority.",
        confidence=0.0,
        asset_tag_text=None,
    )
