"""Inputs and outputs of the agent activities (Manual Hunter, Alarm Triage, Watchman, Weaver)
and of outcome feedback. One pydantic model per activity input and output, like models.py.

Every agent output says who produced it (`generated_by`): a provider and model, or
"offline rules" when no LLM key is configured, so an offline answer is never mistaken for one.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field, model_validator

from factorylm.models.base import Model
from factorylm.models.drift import DriftAlert, ProposedAction

OFFLINE = "offline rules"


class OutcomeKind(StrEnum):
    RESOLVED = "resolved"
    FALSE_POSITIVE = "false_positive"
    UNRESOLVED = "unresolved"


class SimilarEvent(Model):
    """A past drift event found by vector similarity, with what happened afterwards."""

    event_id: int
    plc_id: str
    vendor: str
    metric: str
    magnitude_sigma: float
    detected_at: datetime
    text: str
    similarity: float = Field(description="cosine similarity, 0..1")
    outcome: str | None = None
    outcome_kind: OutcomeKind | None = None
    action_taken: str | None = None
    resolved: bool = False

    def describe(self) -> str:
        """'87 % similar to 2026-01-15 on press-1: bearing replaced'."""
        what = self.outcome or "no outcome recorded"
        if self.outcome_kind is OutcomeKind.FALSE_POSITIVE:
            what = f"false alarm ({self.outcome})" if self.outcome else "false alarm"
        elif self.action_taken and self.outcome:
            what = f"{self.outcome} [{self.action_taken}]"
        return (
            f"{self.similarity * 100:.0f} % similar to {self.detected_at:%Y-%m-%d} on "
            f"{self.plc_id} ({self.vendor}, {self.metric} {self.magnitude_sigma:+.1f}σ): {what}"
        )


# -- Manual Hunter ---------------------------------------------------------------------------
class ManualExcerpt(Model):
    source: str
    page: int | None = None
    section: str | None = None
    text: str
    similarity: float
    citation: str = Field(description="'s7-press.md §Spindle bearings' or 'pump.pdf p. 3'")


class ManualHunterInput(Model):
    workflow_id: str | None = None
    query: str = Field(min_length=1)
    k: int = Field(default=3, ge=1, le=20)


class ManualHunterResult(Model):
    query: str
    excerpts: list[ManualExcerpt]
    generated_by: str = "vector search"
    note: str = ""


# -- Alarm Triage ----------------------------------------------------------------------------
class AlarmTriageInput(Model):
    """A drift (with its stored event) or an alarm code raised by a PLC."""

    workflow_id: str | None = None
    event_id: int | None = None
    alert: DriftAlert | None = None
    alarm_code: str | None = None
    plc_id: str | None = None
    vendor: str | None = None
    k: int = Field(default=5, ge=1, le=20)

    @model_validator(mode="after")
    def _subject(self) -> AlarmTriageInput:
        if self.alert is None and not self.alarm_code:
            raise ValueError("triage needs a drift alert or an alarm code")
        return self


class TriageResult(Model):
    subject: str
    checklist: list[str] = Field(description="actionable steps, the most promising first")
    similar: list[SimilarEvent]
    what_worked: str | None = Field(
        default=None, description="what resolved the most similar past event, if anything did"
    )
    generated_by: str


# -- Watchman --------------------------------------------------------------------------------
class WatchmanInput(Model):
    workflow_id: str | None = None
    plc_id: str
    metric: str
    end: datetime
    window_s: float = Field(default=300.0, gt=0)
    bucket_s: float = Field(default=10.0, gt=0)


class MetricMovement(Model):
    metric: str
    correlation: float | None = Field(description="Pearson r with the drifting metric's buckets")
    shift_sigma: float | None = Field(
        description="window mean against the preceding window, in its standard deviations"
    )
    buckets: int
    moved: bool


class WatchmanResult(Model):
    plc_id: str
    metric: str
    window_s: float
    movements: list[MetricMovement]
    summary: str
    generated_by: str = "sql (time_bucket + corr)"


# -- Weaver ----------------------------------------------------------------------------------
class WeaverInput(Model):
    workflow_id: str | None = None
    event_id: int
    alert: DriftAlert
    manuals: ManualHunterResult | None = None
    triage: TriageResult | None = None
    watchman: WatchmanResult | None = None


class WeaverReport(Model):
    title: str
    summary: str
    markdown: str
    proposals: list[ProposedAction] = Field(description="catalog actions only, best first")
    generated_by: str
    offline: bool


# -- Outcome feedback ------------------------------------------------------------------------
class RecordOutcomeInput(Model):
    event_id: int
    text: str = Field(min_length=1)


class OutcomeRecord(Model):
    event_id: int
    kind: OutcomeKind
    action_taken: str | None
    resolved: bool
    text: str
    generated_by: str
