"""The batch writer against the real hypertable: COPY, flush on stop, bounded loss."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from factorylm.settings import Settings
from helpers import SwitchableProxy, free_port, until
from ingest.writer import BatchWriter


def samples(plc: str, n: int) -> list[tuple[datetime, str, str, float]]:
    t0 = datetime(2026, 11, 20, 8, tzinfo=UTC)
    return [(t0 + timedelta(milliseconds=i), plc, "vibration", float(i)) for i in range(n)]


async def test_rows_arrive_by_size_and_stop_flushes_the_rest(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    writer = BatchWriter(settings.pg_dsn, max_rows=1000, max_delay_s=30)
    writer.start()
    batch = samples("writer-a", 2500)
    writer.add(batch[:2000])
    # Size-triggered: the timer is 30 s.
    await until("2000 rows written", lambda: writer.written == 2000)
    writer.add(batch[2000:])
    assert writer.pending == 500
    await writer.stop()  # the last 500 go in at stop, not after the timer
    rows = await pool.fetch("SELECT value FROM samples WHERE plc_id = 'writer-a' ORDER BY time")
    assert [r["value"] for r in rows] == [float(i) for i in range(2500)]
    assert writer.dropped == 0


async def test_time_flush_happens_without_a_full_batch(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    writer = BatchWriter(settings.pg_dsn, max_rows=10_000, max_delay_s=0.2)
    writer.start()
    writer.add(samples("writer-b", 3))
    await until("3 rows written", lambda: writer.written == 3)
    await writer.stop()
    assert await pool.fetchval("SELECT count(*) FROM samples WHERE plc_id = 'writer-b'") == 3


async def test_outage_loses_nothing_within_the_buffer(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    proxy = SwitchableProxy(settings.pg_port)
    await proxy.start()
    via_proxy = settings.model_copy(update={"pg_port": proxy.port})
    writer = BatchWriter(via_proxy.pg_dsn, max_rows=100, max_delay_s=0.05, max_backoff_s=0.2)
    writer.start()
    batch = samples("writer-e", 900)
    writer.add(batch[:300])
    await until("300 rows written", lambda: writer.written == 300)
    proxy.cut()
    writer.add(batch[300:])
    await until("the writer to notice the outage", lambda: writer.last_error is not None)
    assert writer.pending == 600
    proxy.up = True
    await until("900 rows written", lambda: writer.written == 900)
    await writer.stop()
    await proxy.close()
    values = [
        r["value"]
        for r in await pool.fetch(
            "SELECT value FROM samples WHERE plc_id = 'writer-e' ORDER BY time"
        )
    ]
    assert values == [float(i) for i in range(900)]
    assert writer.dropped == 0


async def test_full_buffer_drops_the_oldest_and_counts_them(settings: Settings) -> None:
    dead = settings.model_copy(update={"pg_port": free_port()})
    writer = BatchWriter(dead.pg_dsn, max_rows=100, max_delay_s=0.05, buffer_rows=1000)
    writer.start()
    writer.add(samples("writer-c", 600))
    await until("the writer to notice the outage", lambda: writer.last_error is not None)
    assert writer.pending == 600 and writer.dropped == 0  # nothing lost while it fits
    writer.add(samples("writer-d", 550))
    assert writer.pending == 1000 and writer.dropped == 150
    kept = list(writer._buffer)
    assert kept[0][1:] == ("writer-c", "vibration", 150.0)  # the 150 oldest went first
    assert kept[-1][1:] == ("writer-d", "vibration", 549.0)
    writer._task.cancel()  # type: ignore[union-attr]  # no database will ever come back here


async def test_samples_still_buffered_when_stop_times_out_are_counted_as_dropped(
    settings: Settings,
) -> None:
    """A stop that runs out of time (compose's stop grace, a database still down) loses what
    is buffered; the loss is counted where every other loss is, not only logged."""
    dead = settings.model_copy(update={"pg_port": free_port()})
    writer = BatchWriter(dead.pg_dsn, max_rows=100, max_delay_s=0.05, buffer_rows=1000)
    writer.start()
    writer.add(samples("writer-e", 240))
    await until("the writer to notice the outage", lambda: writer.last_error is not None)
    await writer.stop(timeout_s=0.2)
    assert writer.dropped == 240 and writer.pending == 0


async def test_each_batch_notifies_its_row_count_and_its_oldest_samples_time(
    settings: Settings,
) -> None:
    # What the plant board's listener reads from (api/board.py): the oldest sample of the
    # batch, not its first, since the collectors' samples interleave in the buffer.
    t0 = datetime(2026, 11, 20, 8, 0, 5, 250_000, tzinfo=UTC)
    rows = [
        (t0 + timedelta(seconds=3), "writer-n", "level", 1.0),
        (t0, "writer-n", "temp", 2.0),  # the oldest, second in the batch
        (t0 + timedelta(seconds=1), "writer-n", "level", 3.0),
    ]
    listener = await asyncpg.connect(settings.pg_dsn)
    payloads: list[str] = []
    await listener.add_listener("samples_written", lambda *args: payloads.append(args[3]))
    writer = BatchWriter(settings.pg_dsn, max_rows=3, max_delay_s=30)
    writer.start()
    try:
        writer.add(rows)
        await until("the batch's notify", lambda: payloads)
    finally:
        await writer.stop()
        await listener.close()
    # 2026-11-20 08:00:05.25 UTC as epoch seconds.
    assert payloads == ["3 1795161605.250"]
