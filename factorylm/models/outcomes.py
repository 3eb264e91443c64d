"""Asking the technician what they found, and closing the question."""

from __future__ import annotations

from factorylm.models.base import Model


class RequestOutcomeInput(Model):
    workflow_id: str
    event_id: int
    recipient: str
    work_order_id: str
    summary: str


class FollowUpInput(Model):
    drift_workflow_id: str
    event_id: int
    recipient: str
    work_order_id: str
    summary: str
    wait_s: float


class FollowUpResult(Model):
    answer: str | None
    recorded: bool


class CloseOutcomeInput(Model):
    workflow_id: str
    answer: str | None
