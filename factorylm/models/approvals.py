"""Approval requests to a person and their decisions."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from factorylm.models.base import Model
from factorylm.models.drift import ActionProposal, DriftAlert


class RequestApprovalInput(Model):
    workflow_id: str
    code: str
    alert: DriftAlert
    proposal: ActionProposal
    recipients: list[str]
    summary: str = Field(default="", description="the agents' findings, in a few lines")
    escalation: bool = Field(default=False, description="the on-duty approver did not answer")
    escalation_reason: str = Field(
        default="", description="who was asked before and why they are not answering"
    )
    timeout_s: float = 300.0
    fallbacks: dict[str, str] = Field(
        default_factory=dict, description="recipient -> SMS number tried when WhatsApp fails"
    )
    attempt: int = Field(
        default=0, description="the escalation chain's round (a repeat asks again)"
    )


class CloseApprovalInput(Model):
    workflow_id: str
    code: str
    status: str = Field(pattern="^(approved|denied|expired|escalated)$")
    answered_by: str | None = None


class ApprovalDecision(Model):
    """A person's answer to a pending approval request."""

    approve: bool
    approver: str = Field(min_length=1)
    code: str | None = Field(default=None, description="the request code, when the channel has one")
    note: str = ""


class PendingApproval(Model):
    code: str
    action: str
    requested_at: datetime
    approvers: list[str]
