"""Catalog writes to a PLC and their verified result."""

from __future__ import annotations

from pydantic import Field

from factorylm.models.base import Model


class PlcWriteInput(Model):
    action_id: str = Field(description="unique per workflow and action: the idempotency key")
    workflow_id: str
    action: str
    value: float
    approved_by: str | None = None
    # The site whose catalog the action is from; the edge of any other site refuses it.
    # Empty in requests recorded before sites.
    site: str = ""


class PlcWriteResult(Model):
    action_id: str
    plc_id: str
    setpoint: str
    value_before: float | None
    value_written: float
    value_read_back: float
    verified: bool
