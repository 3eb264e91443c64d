"""Vector memory of drift events in pgvector: each event's text, embedding and what happened.

Similarity is cosine over all-MiniLM-L6-v2 embeddings of DriftAlert.describe() texts, searched
through the HNSW index. The vendor is metadata, not a partition: an Allen-Bradley drift finds
the Siemens precedent unless a vendor filter is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import numpy as np

from factorylm.embeddings import Embedder, Vector, get_embedder, to_pgvector
from factorylm.models.agents import OutcomeKind, SimilarEvent
from factorylm.settings import Settings

_SIMILAR_SQL = """
SELECT id, plc_id, vendor, metric, magnitude_sigma, detected_at, text, outcome, outcome_kind,
       action_taken, resolved, 1 - (embedding <=> $1::text::vector) AS similarity
FROM drift_events
WHERE embedding IS NOT NULL
  AND ($2::text IS NULL OR vendor = $2)
  AND NOT (id = ANY($3::bigint[]))
ORDER BY embedding <=> $1::text::vector
LIMIT $4
"""


class VectorMemory:
    def __init__(self, pool: asyncpg.Pool, embedder: Embedder, *, ef_search: int = 100) -> None:
        self._pool = pool
        self._embedder = embedder
        self._ef_search = ef_search

    async def store_embedding(self, event_id: int, text: str) -> None:
        vector = (await self._embedder.embed_async([text]))[0]
        await self._pool.execute(
            "UPDATE drift_events SET embedding = $2::text::vector, embedding_model = $3 "
            "WHERE id = $1",
            event_id,
            to_pgvector(vector),
            self._embedder.model_name,
        )

    async def event_vector(self, event_id: int) -> Vector | None:
        text = await self._pool.fetchval(
            "SELECT embedding::text FROM drift_events WHERE id = $1", event_id
        )
        if text is None:
            return None
        return np.asarray([float(x) for x in text.strip("[]").split(",")], dtype=np.float32)

    async def similar(
        self,
        vector: Vector,
        *,
        k: int = 5,
        vendor: str | None = None,
        exclude: Sequence[int] = (),
    ) -> list[SimilarEvent]:
        """The k nearest stored events, most similar first."""
        async with self._pool.acquire() as conn, conn.transaction():
            # SET LOCAL: the pool's connections keep no search settings between callers.
            await conn.execute(f"SET LOCAL hnsw.ef_search = {int(self._ef_search)}")
            # A vendor filter removes rows after the index scan; iterative scans keep going
            # until k rows pass it, instead of returning fewer.
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            rows = await conn.fetch(_SIMILAR_SQL, to_pgvector(vector), vendor, list(exclude), k)
        events = [
            SimilarEvent(
                event_id=r["id"],
                plc_id=r["plc_id"],
                vendor=r["vendor"],
                metric=r["metric"],
                magnitude_sigma=r["magnitude_sigma"],
                detected_at=r["detected_at"],
                text=r["text"],
                similarity=max(0.0, min(1.0, float(r["similarity"]))),
                outcome=r["outcome"],
                outcome_kind=OutcomeKind(r["outcome_kind"]) if r["outcome_kind"] else None,
                action_taken=r["action_taken"],
                resolved=r["resolved"],
            )
            for r in rows
        ]
        # relaxed_order may return neighbours slightly out of order.
        return sorted(events, key=lambda e: e.similarity, reverse=True)

    async def similar_to_text(
        self, text: str, *, k: int = 5, vendor: str | None = None, exclude: Sequence[int] = ()
    ) -> list[SimilarEvent]:
        vector = (await self._embedder.embed_async([text]))[0]
        return await self.similar(vector, k=k, vendor=vendor, exclude=exclude)

    async def similar_to_event(
        self, event_id: int, *, k: int = 5, vendor: str | None = None
    ) -> list[SimilarEvent]:
        vector = await self.event_vector(event_id)
        if vector is None:
            text = await self._pool.fetchval(
                "SELECT text FROM drift_events WHERE id = $1", event_id
            )
            if text is None:
                raise LookupError(f"no drift event {event_id}")
            await self.store_embedding(event_id, text)
            vector = await self.event_vector(event_id)
            assert vector is not None
        return await self.similar(vector, k=k, vendor=vendor, exclude=[event_id])

    async def set_outcome(
        self,
        event_id: int,
        *,
        text: str,
        kind: OutcomeKind,
        action_taken: str | None,
        resolved: bool,
    ) -> bool:
        """Attach a technician's outcome to an event; False when there is no such event."""
        status = await self._pool.execute(
            """UPDATE drift_events SET outcome = $2, outcome_kind = $3, action_taken = $4,
                   resolved = $5, outcome_at = now()
               WHERE id = $1""",
            event_id,
            text,
            kind.value,
            action_taken,
            resolved,
        )
        return bool(status == "UPDATE 1")


def vector_memory(pool: asyncpg.Pool, settings: Settings) -> VectorMemory:
    """The memory of past events with the configured embedding model and search effort."""
    return VectorMemory(pool, get_embedder(settings), ef_search=settings.memory_ef_search)
