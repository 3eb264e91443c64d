"""Opening work orders in the configured CMMS (built-in by default, or Atlas).

When the configured CMMS refuses a work order in a way no retry changes (Atlas's licence, its
free tier, its storage, the account's permissions), the work order is kept in the built-in
store so nothing is lost, operations get an incident with the server's message, and the
returned reference carries a note that the workflow's summary repeats.
"""

from __future__ import annotations

import logging

import asyncpg
from temporalio import activity

from factorylm.cmms import CmmsRefusedError, WorkOrderStore
from factorylm.cmms.atlas import AtlasCmms
from factorylm.cmms.builtin import BuiltinCmms, work_order_label
from factorylm.models.work_orders import OpenWorkOrderInput, WorkOrderRef
from factorylm.settings import Settings, reveal

__all__ = ["CmmsActivities", "store_for", "work_order_label"]

log = logging.getLogger(__name__)

# The notifications recipient of operations' reports and incidents (activities/notify.py).
OPERATIONS = "operations"


def store_for(pool: asyncpg.Pool, settings: Settings) -> WorkOrderStore:
    if settings.cmms == "atlas":
        return AtlasCmms(
            pool,
            settings.atlas_url,
            settings.atlas_email,
            reveal(settings.atlas_password),
            create_assets=settings.atlas_create_assets,
        )
    return BuiltinCmms(pool)


def _workflow_id() -> str | None:
    return activity.info().workflow_id if activity.in_activity() else None


class CmmsActivities:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings | None = None,
        *,
        store: WorkOrderStore | None = None,
    ) -> None:
        self._pool = pool
        self._builtin = BuiltinCmms(pool)
        self._store: WorkOrderStore = store or (
            store_for(pool, settings) if settings is not None else self._builtin
        )

    @activity.defn(name="open_work_order")
    async def open_work_order(self, req: OpenWorkOrderInput) -> WorkOrderRef:
        if self._store.system != self._builtin.system:
            # An earlier attempt was refused and kept it here: never open it twice.
            kept = await self._pool.fetchval(
                "SELECT id FROM work_orders WHERE external_key = $1", req.external_key
            )
            if kept is not None:
                return WorkOrderRef(
                    id=work_order_label(kept),
                    created=False,
                    system=self._builtin.system,
                    note=f"kept in the built-in CMMS: {self._store.system} refused it",
                )
        try:
            return await self._store.open(req)
        except CmmsRefusedError as refused:
            return await self._keep(req, refused)

    async def _keep(self, req: OpenWorkOrderInput, refused: CmmsRefusedError) -> WorkOrderRef:
        reason = f"{refused.system} refused it ({refused.kind}): {refused.message}"
        log.error("work order %s kept in the built-in CMMS: %s", req.external_key, reason)
        ref = await self._builtin.open(
            req.model_copy(
                update={"description": f"{req.description}\n\nKept in FactoryLM: {reason}"}
            )
        )
        await self._pool.execute(
            """INSERT INTO notifications (dedup_key, channel, recipient, body, workflow_id)
               VALUES ($1, 'log', $2, $3, $4) ON CONFLICT DO NOTHING""",
            f"cmms-refused/{req.external_key}",
            OPERATIONS,
            f"CMMS incident: {reason}. Work order {ref.id} ({req.title!r}) is kept in the "
            f"built-in CMMS; nothing is lost. Lift the refusal in {refused.system} "
            "(docs/operations.md, Atlas CMMS) for the next ones.",
            _workflow_id(),
        )
        return ref.model_copy(update={"note": f"kept in the built-in CMMS: {reason}"})
