"""Work orders: one interface, the built-in store or Atlas CMMS behind it.

Both are idempotent by the caller's external key: opening the same key twice returns the
work order the first call opened.
"""

from __future__ import annotations

from typing import Protocol

from factorylm.models.work_orders import OpenWorkOrderInput, WorkOrderRef


class CmmsRefusedError(RuntimeError):
    """The CMMS will not take this work order until a person changes something there (its
    licence, its free tier, its storage, the account's permissions). Never retried: the
    activity keeps the work order in the built-in store instead and tells operations."""

    def __init__(self, system: str, kind: str, message: str) -> None:
        super().__init__(f"{system} refused the work order ({kind}): {message}")
        self.system = system
        self.kind = kind
        self.message = message


class WorkOrderStore(Protocol):
    """Attachments arrive as references to files in the blob store, never as bytes in payloads."""

    system: str

    async def open(self, req: OpenWorkOrderInput) -> WorkOrderRef: ...
