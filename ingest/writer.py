"""Batch writer: samples into the `samples` hypertable with asyncpg's binary COPY.

Flushes when a batch is full or at least every `max_delay_s`. The buffer is bounded: while
PostgreSQL is unreachable the writer retries with backoff and keeps everything until the
buffer is full, then drops the oldest samples and counts each one it dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from datetime import datetime

import asyncpg
from opentelemetry import metrics

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


class BatchWriter:
    def __init__(
        self,
        dsn: str,
        *,
        max_rows: int = 5000,
        max_delay_s: float = 1.0,
        buffer_rows: int = 1_000_000,
        max_backoff_s: float = 5.0,
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

    # -- producer side -----------------------------------------------------------------------
    def add(self, samples: Iterable[Sample]) -> None:
        self._buffer.extend(samples)
        if len(self._buffer) > self._buffer_rows:
            self._trim()
        if len(self._buffer) >= self._max_rows:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="batch-writer")

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
            await self._conn.copy_records_to_table("samples", records=batch, columns=_COLUMNS)
        except BaseException:
            self._buffer.extendleft(reversed(batch))
            self._trim()
            raise
        self.written += n
        self.flushes += 1

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
