"""Messages to people: one-off texts and reports, who is on call, and delivery outcomes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from factorylm.models.base import Model


class MessageKind(StrEnum):
    """What a message is for: it is stored with every outbound row, so a person (or a query)
    can tell an approval request from a summary."""

    APPROVAL = "approval"
    PAGE = "page"  # an alert that escalates until someone acknowledges it (ACK)
    NOTICE = "notice"  # auto-action notices, incidents, photo answers, the Monkey's messages
    SUMMARY = "summary"
    OUTCOME = "outcome"
    REPORT = "report"
    ALERT = "alert"  # collector and health alerts


class MessageAbout(Model):
    """The machine a message is about: it then links to its graphs (Grafana)."""

    plc_id: str
    metric: str
    at: datetime


class SendMessageInput(Model):
    dedup_key: str
    recipients: list[str]
    body: str
    workflow_id: str | None = None
    # Defaults keep the inputs recorded before the outbound path decodable (replay).
    kind: MessageKind = MessageKind.NOTICE
    ack_code: str | None = Field(
        default=None, description="a page's code: the reply 'ACK <code>' stops its escalation"
    )
    fallbacks: dict[str, str] = Field(
        default_factory=dict, description="recipient -> SMS address tried when WhatsApp fails"
    )
    about: MessageAbout | None = None


class SendReportInput(Model):
    dedup_key: str
    subject: str
    body: str


class EscalationStep(Model):
    """One person asked, and how long they have before the next step."""

    person: str = Field(description="the roster's id for them ('approver-1' without a roster)")
    address: str = Field(description="their first channel, e.g. 'whatsapp:+15550100001'")
    fallback: str | None = Field(default=None, description="their SMS number, if any")
    wait_s: float = Field(gt=0)


class DeliveryFailure(Model):
    """A message that reached nobody on any of the person's channels (the status callback)."""

    code: str
    address: str
    error: str = ""


class Acknowledgement(Model):
    """'ACK' or 'ACK <code>' from a person who was paged."""

    by: str
    code: str
