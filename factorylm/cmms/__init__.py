"""Work orders: one interface, the built-in store or Atlas CMMS behind it.

Both are idempotent by the caller's external key: opening the same key twice returns the
work order the first call opened.
"""

from __future__ import annotations

from typing import Protocol

from factorylm.models.work_orders import OpenWorkOrderInput, WorkOrderRef


class WorkOrderStore(Protocol):
    """Attachments arrive as references to files in the blob store, never as bytes in payloads."""

    system: str

    async def open(self, req: OpenWorkOrderInput) -> WorkOrderRef: ...
