"""The real PostgreSQL: TimescaleDB hypertables, pgvector HNSW, migrations."""

from __future__ import annotations

import random

import asyncpg

from factorylm.db.migrate import available_migrations, migrate


async def test_samples_is_a_hypertable(pool: asyncpg.Pool) -> None:
    name = await pool.fetchval(
        "SELECT hypertable_name FROM timescaledb_information.hypertables "
        "WHERE hypertable_name = 'samples'"
    )
    assert name == "samples"
    bucketed = await pool.fetchval(
        "SELECT time_bucket('1 minute', TIMESTAMPTZ '2026-11-20 10:07:31+00')::text"
    )
    assert bucketed.startswith("2026-11-20 10:07:00")


async def test_create_hypertable_and_vector_hnsw_work(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("CREATE TABLE ht_probe (time timestamptz NOT NULL, v float8)")
        created = await conn.fetchval(
            "SELECT created FROM create_hypertable('ht_probe', by_range('time'))"
        )
        assert created is True
        await conn.execute("CREATE TABLE vec_probe (id int PRIMARY KEY, embedding vector(3))")
        await conn.execute(
            "CREATE INDEX vec_probe_hnsw ON vec_probe USING hnsw (embedding vector_cosine_ops)"
        )
        rng = random.Random(1)
        rows = [(i, str([rng.random(), rng.random(), rng.random()])) for i in range(500)]
        await conn.executemany("INSERT INTO vec_probe VALUES ($1, $2::vector)", rows)
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN SELECT id FROM vec_probe ORDER BY embedding <=> '[1,0,0]' LIMIT 5"
            )
        )
        assert "vec_probe_hnsw" in plan
        nearest = await conn.fetch(
            "SELECT id FROM vec_probe ORDER BY embedding <=> $1::vector LIMIT 1", rows[42][1]
        )
        assert nearest[0]["id"] == 42
        await conn.execute("DROP TABLE ht_probe")
        await conn.execute("DROP TABLE vec_probe")


async def test_drift_events_embedding_has_hnsw_index(pool: asyncpg.Pool) -> None:
    indexdef = await pool.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'drift_events_embedding_hnsw'"
    )
    assert "hnsw" in indexdef and "vector_cosine_ops" in indexdef


async def test_migrations_are_recorded_and_idempotent(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await migrate(conn) == []
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
    assert versions == [m.version for m in available_migrations()]
