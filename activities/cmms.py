"""Opening work orders in the configured CMMS (built-in by default, or Atlas)."""

from __future__ import annotations

import asyncpg
from temporalio import activity

from factorylm.cmms import WorkOrderStore
from factorylm.cmms.atlas import AtlasCmms
from factorylm.cmms.builtin import BuiltinCmms, work_order_label
from factorylm.models.work_orders import OpenWorkOrderInput, WorkOrderRef
from factorylm.settings import Settings, reveal

__all__ = ["CmmsActivities", "store_for", "work_order_label"]


def store_for(pool: asyncpg.Pool, settings: Settings) -> WorkOrderStore:
    if settings.cmms == "atlas":
        return AtlasCmms(
            pool, settings.atlas_url, settings.atlas_email, reveal(settings.atlas_password)
        )
    return BuiltinCmms(pool)


class CmmsActivities:
    def __init__(self, pool: asyncpg.Pool, settings: Settings | None = None) -> None:
        self._store: WorkOrderStore = (
            store_for(pool, settings) if settings is not None else BuiltinCmms(pool)
        )

    @activity.defn(name="open_work_order")
    async def open_work_order(self, req: OpenWorkOrderInput) -> WorkOrderRef:
        return await self._store.open(req)
