"""Batch writer: samples into the `samples` hypertable with asyncpg's binary COPY.

Flushes when a batch is full or at least every `max_delay_s`. With a spool (ingest/spool.py,
the production default), samples PostgreSQL cannot take — it is unreachable, or the memory
buffer passed its high-water mark — go to local disk within `max_delay_s` and are backfilled
in time order once it is back, by a second connection, while live samples keep flowing on the
first. Without one (tests, benchmarks of the plain path), the buffer is bounded: while
PostgreSQL is unreachable the writer retries with backoff and keeps everything until the buffer
is full, then drops the oldest samples and counts each one it dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from datetime import datetime

import asyncpg
from opentelemetry import metrics

from factorylm.channels import SAMPLES_CHANNEL
from ingest.spool import Record, Spool

log = logging.getLogger(__name__)

# Exported wherever the process configures an OpenTelemetry meter provider; a no-op otherwise.
_DROPPED = metrics.get_meter("factorylm.ingest").create_counter(
    "factorylm.ingest.samples_dropped",
    unit="{sample}",
    description="Samples dropped because the writer's buffer was full (oldest first)",
)

Sample = tuple[datetime, str, str, float]  # (time, plc_id, metric, value)
_COLUMNS = ("time", "plc_id", "metric", "value")
_BACKLOG_BATCHES = 8
# A COPY of a batch takes milliseconds; one that has not finished after this long is on a link
# that went away without a reset (a pulled cable, a dead router): TCP alone would wait about
# 15 minutes before saying so. The batch goes back to the buffer (and so to the spool).
WRITE_TIMEOUT_S = 10.0


class BatchWriter:
    def __init__(
        self,
        dsn: str,
        *,
        max_rows: int = 5000,
        max_delay_s: float = 1.0,
        buffer_rows: int = 1_000_000,
        max_backoff_s: float = 5.0,
        spool: Spool | None = None,
        high_water_rows: int | None = None,
        backfill_rows: int = 50_000,
    ) -> None:
        self._dsn = dsn
        self._max_rows = max_rows
        self._max_delay_s = max_delay_s
        self._buffer: deque[Sample] = deque()
        self._buffer_rows = buffer_rows
        self._max_backoff_s = max_backoff_s
        self._conn: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0
        self.dropped = 0
        self.flushes = 0
        self.last_error: str | None = None
        self._spool = spool
        # Past this many buffered rows (PostgreSQL slower than the plant), the rest goes to disk.
        self._high_water = high_water_rows if high_water_rows is not None else buffer_rows // 2
        self._backfill_rows = backfill_rows
        self._db_down = False
        self._next_probe = 0.0
        self._backfill_task: asyncio.Task[None] | None = None
        self._backfill_wake = asyncio.Event()
        self.backfilled = 0
        self.backfill_rate = 0.0  # samples/s of the last backfill COPYs

    # -- producer side -----------------------------------------------------------------------
    def add(self, samples: Iterable[Sample]) -> None:
        if self._db_down and self._spool is not None:
            # During an outage a poll's samples go straight to disk: a kill -9 then loses at
            # most the spool's fsync interval, not also what sat in memory.
            self._spool.append(list(samples))
            return
        self._buffer.extend(samples)
        if len(self._buffer) > self._buffer_rows:
            self._trim()
        if len(self._buffer) >= self._max_rows:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def spool(self) -> Spool | None:
        return self._spool

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="batch-writer")
        if self._spool is not None:
            self._backfill_task = asyncio.create_task(self._backfill(), name="spool-backfill")
            # What a previous process spooled is backfilled as soon as PostgreSQL answers.
            self._backfill_wake.set()

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Flush everything still buffered, then close."""
        self._stopping = True
        self._wake.set()
        if self._task:
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except TimeoutError:
                # Whatever is still buffered is gone with the process: count it as dropped,
                # where the operator looks for loss, not only in a log line.
                lost = len(self._buffer)
                self._buffer.clear()
                self.dropped += lost
                _DROPPED.add(lost)
                log.error("writer stopped with %d samples unwritten: counted as dropped", lost)
        if self._backfill_task is not None:
            # Progress is stored with each COPY: an interrupted backfill resumes where it was.
            self._backfill_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._backfill_task
        if self._spool is not None:
            self._spool.close()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self._stopping and len(self._buffer) < self._max_rows:
                try:
                    await asyncio.wait_for(self._wake.wait(), self._max_delay_s)
                except TimeoutError:
                    pass
            self._wake.clear()
            if self._spool is not None and (self._db_down or len(self._buffer) > self._high_water):
                self._to_spool()
                if self._db_down and not await self._probe(backoff):
                    backoff = min(backoff * 2, self._max_backoff_s)
                if self._stopping:
                    return  # everything is on disk: the next start backfills it
                continue
            try:
                while self._buffer:
                    await self._flush_one()
                    if not self._stopping and len(self._buffer) < self._max_rows:
                        break
                backoff = 0.1
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.last_error = str(exc)
                log.warning(
                    "write failed (%s); %d samples buffered, retry in %.1f s",
                    exc,
                    len(self._buffer),
                    backoff,
                )
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None
                if self._spool is not None:
                    # From now until PostgreSQL answers again, samples go to disk.
                    self._db_down = True
                    self._next_probe = time.monotonic() + backoff
                    self._to_spool()
                    continue
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            if self._stopping and not self._buffer:
                return

    async def _flush_one(self) -> None:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn, timeout=5)
        # A backlog (after an outage, or a burst) goes in fewer, larger COPYs: each COPY has a
        # fixed round-trip cost that small batches pay over and over.
        n = min(len(self._buffer), self._max_rows * _BACKLOG_BATCHES)
        # Take the batch out first: producers may overflow the buffer while COPY is in flight.
        batch = [self._buffer.popleft() for _ in range(n)]
        try:
            await self._conn.copy_records_to_table(
                "samples", records=batch, columns=_COLUMNS, timeout=WRITE_TIMEOUT_S
            )
        except BaseException:
            self._buffer.extendleft(reversed(batch))
            self._trim()
            raise
        self.written += n
        self.flushes += 1
        # The plant board's live trends wake on this (api/board.py) instead of every browser
        # polling the table, and read only from the batch's oldest second on. After the
        # counters: a lost notify costs a board tick, no sample.
        oldest = min(record[0] for record in batch).timestamp()
        with contextlib.suppress(asyncpg.PostgresError):
            await self._conn.execute(
                "SELECT pg_notify($1, $2)",
                SAMPLES_CHANNEL,
                f"{n} {oldest:.3f}",
                timeout=WRITE_TIMEOUT_S,
            )

    # -- store-and-forward ---------------------------------------------------------------------
    def _to_spool(self) -> None:
        assert self._spool is not None
        while self._buffer:
            n = min(len(self._buffer), self._max_rows * _BACKLOG_BATCHES)
            self._spool.append([self._buffer.popleft() for _ in range(n)])
        self._spool.sync_if_due()
        self._backfill_wake.set()  # over the high-water mark, PostgreSQL is up: drain it

    async def _probe(self, backoff: float) -> bool:
        """While spooling: is PostgreSQL back? Asked at most once per backoff step."""
        if time.monotonic() < self._next_probe:
            return False
        self._next_probe = time.monotonic() + backoff
        try:
            self._conn = await asyncpg.connect(self._dsn, timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self.last_error = str(exc)
            return False
        log.info("PostgreSQL is back: live samples go to it again, the spool is backfilled")
        self._db_down = False
        self.last_error = None
        self._backfill_wake.set()
        return True

    async def _backfill(self) -> None:
        assert self._spool is not None
        spool = self._spool
        conn: asyncpg.Connection | None = None
        loaded = False
        backoff = 0.2
        while True:
            if spool.empty() or self._db_down:
                self._backfill_wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._backfill_wake.wait(), 1.0)
                continue
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self._dsn, timeout=5)
                if not loaded:
                    rows = await conn.fetch(
                        "SELECT segment, upto FROM ingest_spool_progress WHERE spool_id = $1",
                        spool.id,
                    )
                    spool.set_progress({r["segment"]: r["upto"] for r in rows})
                    loaded = True
                records = list(spool.next_records(self._backfill_rows))
                if not records:
                    continue
                await self._copy_records(conn, spool.id, records)
                for record in records:
                    spool.mark_done(record)
                backoff = 0.2
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("spool backfill failed (%s); retry in %.1f s", exc, backoff)
                if conn is not None:
                    conn.terminate()
                    conn = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _copy_records(
        self, conn: asyncpg.Connection, spool_id: str, records: list[Record]
    ) -> None:
        batch = [sample for record in records for sample in record.samples]
        t0 = time.perf_counter()
        # The samples and how far the spool is in PostgreSQL commit together: a crash on either
        # side of the commit neither loses a record nor writes one twice.
        async with conn.transaction():
            # First, and in the same transaction: minutes already rolled up past the rollup's
            # lookback are re-rolled (migration 0025). Before the COPY, so the backfill takes
            # the lifecycle's lock before any chunk's, in the order the drop takes them. It may
            # wait for a rollup step to commit (seconds), not for a link that went away.
            await conn.execute(
                "SELECT factorylm_note_late_samples($1)",
                min((sample[0] for sample in batch), default=None),
                timeout=6 * WRITE_TIMEOUT_S,
            )
            await conn.copy_records_to_table(
                "samples", records=batch, columns=_COLUMNS, timeout=WRITE_TIMEOUT_S
            )
            await conn.execute(
                """INSERT INTO ingest_spool_progress (spool_id, segment, upto, updated_at)
                   VALUES ($1, $2, $3, now())
                   ON CONFLICT (spool_id, segment) DO UPDATE
                       SET upto = greatest(ingest_spool_progress.upto, EXCLUDED.upto),
                           updated_at = now()""",
                spool_id,
                records[-1].segment,
                records[-1].end,
            )
        elapsed = time.perf_counter() - t0
        self.backfilled += len(batch)
        self.backfill_rate = len(batch) / elapsed if elapsed > 0 else 0.0

    def _trim(self) -> None:
        overflow = len(self._buffer) - self._buffer_rows
        if overflow > 0:
            for _ in range(overflow):
                self._buffer.popleft()
            self.dropped += overflow
            _DROPPED.add(overflow)
            log.warning(
                "sample buffer full (%d rows): dropped the %d oldest, %d dropped in total",
                self._buffer_rows,
                overflow,
                self.dropped,
            )
