"""asyncpg pools for the processes, with the migrations applied before first use."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from factorylm.db.migrate import ensure_database, migrate
from factorylm.settings import Settings


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL could not be reached; the message says how to start it."""


async def prepare_database(settings: Settings) -> None:
    """Create the database if needed and apply migrations."""
    try:
        await ensure_database(settings.dsn_for("postgres"), settings.pg_database)
        conn = await asyncpg.connect(settings.pg_dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(
            f"cannot reach PostgreSQL at {settings.pg_host}:{settings.pg_port} ({exc}); "
            "start the embedded cluster with `factorylm db start`"
        ) from exc
    try:
        await migrate(conn)
    finally:
        await conn.close()


async def create_pool(settings: Settings, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(settings.pg_dsn, min_size=min_size, max_size=max_size)
    assert pool is not None
    return pool


async def close_pool(pool: asyncpg.Pool, what: str, timeout_s: float = 10.0) -> None:
    """Close a pool on shutdown, bounded: asyncpg's close waits for every acquired connection
    to come back, and one held by a task that never returns would hold the process's stop for
    ever. Past `timeout_s` the connections are terminated."""
    try:
        await asyncio.wait_for(pool.close(), timeout_s)
    except TimeoutError:
        logging.getLogger(__name__).warning(
            "%s: database pool not closed in %g s; its connections are terminated", what, timeout_s
        )
        pool.terminate()
