"""One collector per PLC: polls at its configured rate and timestamps values at read time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from factorylm.drivers import PlcDriver, PlcError, driver_for
from factorylm.plant import Plc

log = logging.getLogger(__name__)

SampleSink = Callable[[Plc, datetime, float, dict[str, float]], None]


class Collector:
    def __init__(self, plc: Plc, sink: SampleSink, *, driver: PlcDriver | None = None) -> None:
        self.plc = plc
        self._sink = sink
        self._driver = driver or driver_for(plc)
        self._period = plc.poll_interval_ms / 1000
        self.cycles = 0
        self.missed = 0
        self.consecutive_errors = 0
        self.last_good: datetime | None = None
        self.last_error: str | None = None

    async def run(self) -> None:
        backoff = self._period
        next_at = time.monotonic()
        try:
            while True:
                try:
                    mono = time.monotonic()
                    values = await self._driver.read_points(list(self.plc.metrics))
                    when = datetime.now(UTC)
                except PlcError as exc:
                    self.consecutive_errors += 1
                    self.last_error = str(exc)
                    log.warning(
                        "%s (attempt %d, retry in %.1f s)", exc, self.consecutive_errors, backoff
                    )
                    await self._driver.close()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    next_at = time.monotonic()
                    continue
                backoff = self._period
                self.consecutive_errors = 0
                self.last_good = when
                self.cycles += 1
                self._sink(self.plc, when, mono, values)
                next_at += self._period
                delay = next_at - time.monotonic()
                if delay < 0:
                    # Keep the cadence rather than bursting to catch up.
                    skipped = int(-delay // self._period) + 1
                    self.missed += skipped
                    next_at += skipped * self._period
                    delay = next_at - time.monotonic()
                await asyncio.sleep(max(delay, 0))
        finally:
            await self._driver.close()
