"""The memory benchmarks run end to end on a small corpus, and a rerun reuses it."""

from __future__ import annotations

from dev.bench.memory import alert_texts, embed_throughput, similarity_top5_p99_ms
from factorylm.settings import Settings


def test_the_corpus_is_realistic_alert_text() -> None:
    texts, vendors = alert_texts(50, seed=1)
    assert len(set(texts)) == 50 and " drifted " in texts[0] and "σ over " in texts[0]
    assert texts == alert_texts(50, seed=1)[0] and len(set(vendors)) > 2


async def test_similarity_bench_on_a_small_corpus(settings: Settings) -> None:
    first = await similarity_top5_p99_ms(settings, n=400, queries=20)
    assert first["bench"] == "similarity_top5_p99_ms" and first["unit"] == "ms"
    assert first["recall"] >= 0.95 and first["value"] > 0 and first["anchor"] > 0
    assert first["rows"] == 400 and not first["corpus_cached"]
    again = await similarity_top5_p99_ms(settings, n=400, queries=20)
    assert again["corpus_cached"] and again["corpus_embed_seconds"] == first["corpus_embed_seconds"]


async def test_embed_throughput_bench(settings: Settings) -> None:
    result = await embed_throughput(settings, n=100)
    assert {"bench", "value", "unit", "anchor", "ratio"} <= set(result)
    assert result["unit"] == "sentences/s" and result["value"] > 0
