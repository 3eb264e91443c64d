"""Vector memory in pgvector: record_drift_event embeds the event; similar events come back
across vendors, or filtered by vendor; outcomes travel with them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from activities.events import EventActivities
from factorylm.embeddings import get_embedder
from factorylm.memory import VectorMemory
from factorylm.models.agents import OutcomeKind
from factorylm.models.drift import DriftAlert, RecordEventInput
from factorylm.settings import Settings


def drift(
    plc: str,
    vendor: str,
    metric: str,
    sigma: float,
    unit: str = "mm/s",
    related: dict[str, float] | None = None,
    when: datetime | None = None,
) -> DriftAlert:
    t = when or datetime.now(UTC)
    return DriftAlert(
        plc_id=plc,
        vendor=vendor,
        metric=metric,
        unit=unit,
        sigma=sigma,
        window_mean=2.0 + sigma * 0.3,
        window_count=3000,
        window_seconds=300,
        baseline_mean=2.0,
        baseline_std=0.3,
        sample_time=t,
        detected_at=t,
        related=related or {},
    )


async def record(events: EventActivities, alert: DriftAlert) -> int:
    return await events.record_drift_event(
        RecordEventInput(workflow_id=f"mem-{uuid.uuid4().hex[:8]}", alert=alert)
    )


@pytest.fixture
def memory(pool: asyncpg.Pool, settings: Settings) -> VectorMemory:
    return VectorMemory(pool, get_embedder(settings), ef_search=settings.memory_ef_search)


async def test_record_drift_event_stores_text_and_embedding(
    pool: asyncpg.Pool, memory: VectorMemory
) -> None:
    events = EventActivities(pool, memory)
    alert = drift("press-1", "siemens_s7", "vibration", 2.3, related={"motor_temp": 1.1})
    event_id = await record(events, alert)
    row = await pool.fetchrow(
        "SELECT text, vector_dims(embedding) AS dims, embedding_model, vendor, metric, "
        "magnitude_sigma FROM drift_events WHERE id = $1",
        event_id,
    )
    assert row["text"] == alert.describe() and "related: motor_temp +1.1σ" in row["text"]
    assert row["dims"] == 384 and row["embedding_model"].endswith("all-MiniLM-L6-v2")
    assert (row["vendor"], row["metric"], row["magnitude_sigma"]) == (
        "siemens_s7",
        "vibration",
        2.3,
    )
    # A retry of the same activity finds the same row.
    again = await events.record_drift_event(
        RecordEventInput(
            workflow_id=await pool.fetchval(
                "SELECT workflow_id FROM drift_events WHERE id = $1", event_id
            ),
            alert=alert,
        )
    )
    assert again == event_id


async def test_an_allen_bradley_drift_finds_the_siemens_precedent(
    pool: asyncpg.Pool, memory: VectorMemory
) -> None:
    events = EventActivities(pool, memory)
    # A unique machine name keeps this test's events apart from others in the database.
    tag = uuid.uuid4().hex[:4]
    siemens = await record(
        events,
        drift(
            f"press-{tag}",
            "siemens_s7",
            "vibration",
            2.3,
            related={"motor_temp": 1.1},
            when=datetime(2026, 1, 15, 9, 30, tzinfo=UTC),
        ),
    )
    await memory.set_outcome(
        siemens,
        text="bearing replaced",
        kind=OutcomeKind.RESOLVED,
        action_taken="replaced_bearing",
        resolved=True,
    )
    for plc, metric, sigma, unit in (
        (f"oven-{tag}", "zone_temp", -3.1, "degC"),
        (f"pump-{tag}", "discharge_pressure", 2.8, "bar"),
        (f"line-{tag}", "current", 2.2, "A"),
    ):
        await record(events, drift(plc, "generic_modbus", metric, sigma, unit=unit))
    ab = await record(
        events,
        drift(f"mixer-{tag}", "allen_bradley", "vibration", 2.6, related={"motor_temp": 0.9}),
    )

    similar = await memory.similar_to_event(ab, k=5)
    assert ab not in [e.event_id for e in similar]
    mine = [e for e in similar if tag in e.plc_id]
    top = mine[0]
    assert all(top.similarity > other.similarity + 0.05 for other in mine[1:])
    assert top.event_id == siemens and top.vendor == "siemens_s7" and top.similarity > 0.7
    assert top.outcome == "bearing replaced" and top.resolved
    assert top.describe().startswith(
        f"{top.similarity * 100:.0f} % similar to 2026-01-15 on press-"
    )
    assert "bearing replaced" in top.describe()

    filtered = await memory.similar_to_event(ab, k=5, vendor="generic_modbus")
    assert filtered and all(e.vendor == "generic_modbus" for e in filtered)


async def test_similar_to_text_orders_by_similarity(memory: VectorMemory) -> None:
    found = await memory.similar_to_text("vibration drifted on the press", k=5)
    sims = [e.similarity for e in found]
    assert sims == sorted(sims, reverse=True) and all(0 <= s <= 1 for s in sims)


async def test_outcome_for_a_missing_event_is_reported(memory: VectorMemory) -> None:
    assert not await memory.set_outcome(
        -1, text="x", kind=OutcomeKind.RESOLVED, action_taken=None, resolved=True
    )
    with pytest.raises(LookupError):
        await memory.similar_to_event(-1)
