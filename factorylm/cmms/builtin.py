"""The built-in CMMS: work orders in PostgreSQL, attachments stored beside the photos."""

from __future__ import annotations

import json

import asyncpg

from factorylm.models.work_orders import OpenWorkOrderInput, WorkOrderRef


def work_order_label(row_id: int) -> str:
    return f"WO-{row_id:06d}"


class BuiltinCmms:
    system = "builtin"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def open(self, req: OpenWorkOrderInput) -> WorkOrderRef:
        # The files already live in the blob store: the work order keeps their references.
        stored = [a.model_dump() for a in req.attachments]
        row_id = await self._pool.fetchval(
            """INSERT INTO work_orders (external_key, title, description, priority, asset_id,
                   due_date, attachments)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
               ON CONFLICT (external_key) DO NOTHING RETURNING id""",
            req.external_key,
            req.title,
            req.description,
            req.priority.value,
            req.asset_id,
            req.due_date,
            json.dumps(stored),
        )
        if row_id is not None:
            return WorkOrderRef(id=work_order_label(row_id), created=True, system=self.system)
        existing = await self._pool.fetchval(
            "SELECT id FROM work_orders WHERE external_key = $1", req.external_key
        )
        return WorkOrderRef(id=work_order_label(existing), created=False, system=self.system)
