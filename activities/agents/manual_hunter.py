"""Manual Hunter: the manual excerpts that answer an alert, each with its citation."""

from __future__ import annotations

from temporalio import activity

from factorylm.manuals import ManualStore
from factorylm.models.agents import ManualHunterInput, ManualHunterResult


class ManualHunter:
    def __init__(self, store: ManualStore) -> None:
        self._store = store

    @activity.defn(name="manual_hunter")
    async def manual_hunter(self, req: ManualHunterInput) -> ManualHunterResult:
        excerpts = await self._store.search(req.query, k=req.k)
        note = "" if excerpts else "no manuals ingested; add some with `factorylm manuals add`"
        return ManualHunterResult(query=req.query, excerpts=excerpts, note=note)
