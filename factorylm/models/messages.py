"""Messages to people: one-off texts and reports."""

from __future__ import annotations

from factorylm.models.base import Model


class SendMessageInput(Model):
    dedup_key: str
    recipients: list[str]
    body: str
    workflow_id: str | None = None


class SendReportInput(Model):
    dedup_key: str
    subject: str
    body: str
