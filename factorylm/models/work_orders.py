"""Work orders in the CMMS and the attachments they carry."""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import Field

from factorylm.models.base import Model


class WorkOrderPriority(StrEnum):
    NONE = "NONE"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class AttachmentRef(Model):
    """A file in the blob store (photos, reports): payloads carry the reference, not bytes."""

    name: str
    content_type: str
    path: str


class OpenWorkOrderInput(Model):
    external_key: str = Field(description="idempotency key: a retried activity never opens two")
    title: str
    description: str
    priority: WorkOrderPriority = WorkOrderPriority.MEDIUM
    asset_id: str | None = None
    due_date: date | None = None
    attachments: list[AttachmentRef] = Field(default_factory=list)


class WorkOrderRef(Model):
    id: str
    created: bool
    system: str = "builtin"
    # Set when the work order is not where it was meant to go (Atlas refused it and the
    # built-in store kept it): the workflow's summary says so.
    note: str | None = None
