"""Work orders in the built-in CMMS tables, idempotent by an external key."""

from __future__ import annotations

import asyncpg
from temporalio import activity

from factorylm.models import OpenWorkOrderInput, WorkOrderRef


def work_order_label(row_id: int) -> str:
    return f"WO-{row_id:06d}"


class CmmsActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn(name="open_work_order")
    async def open_work_order(self, req: OpenWorkOrderInput) -> WorkOrderRef:
        row_id = await self._pool.fetchval(
            """INSERT INTO work_orders (external_key, title, description, priority, asset_id)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (external_key) DO NOTHING RETURNING id""",
            req.external_key,
            req.title,
            req.description,
            req.priority.value,
            req.asset_id,
        )
        if row_id is not None:
            return WorkOrderRef(id=work_order_label(row_id), created=True)
        existing = await self._pool.fetchval(
            "SELECT id FROM work_orders WHERE external_key = $1", req.external_key
        )
        return WorkOrderRef(id=work_order_label(existing), created=False)
