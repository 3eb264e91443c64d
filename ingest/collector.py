"""One collector per PLC: polls at its configured rate and timestamps values at read time.

The cadence is fixed: cycle n starts at t0 + phase + n·period. The manager gives PLCs that
share a poll interval different phases, so 200 devices polled every second start their cycles
5 ms apart rather than all in the same instant. A cycle that overruns its slot skips the slots
it missed (counted in `missed`) instead of bursting to catch up. When the PLC fails, the
collector closes the connection and retries with exponential backoff, coming back on its own
phase; the manager hears about every failure and recovery through `on_change`.

A value that is not a finite number (NaN or ±inf: a failed f32 sensor, a REAL the PLC never
initialised) is not a sample. It is rejected here, where every protocol's decoded values
arrive, and counted per metric as bad quality (`bad_samples`, shown in `collector_status`);
one NaN in a rolling sum would otherwise keep that metric's drift NaN for good.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from factorylm.drivers import PlcDriver, PlcError, driver_for
from factorylm.plant import Plc, Point
from factorylm.protocols import PROTOCOLS

log = logging.getLogger(__name__)

LATENESS_KEPT = 4096  # cycles: 6.8 min at 100 ms, 68 min at 1 s

SampleSink = Callable[[Plc, datetime, float, dict[str, float]], None]


class CollectorBase:
    """What the manager reads of every collector, polling or push, and the one quality path.

    A push collector (a protocol whose ProtocolSpec names a `collector`) subclasses this with
    the same constructor as Collector, implements `run()` (connect, receive until cancelled,
    reconnect with backoff on its own, close on the way out) and reports through `_deliver`
    (good values, non-finite ones rejected here), `_bad` (a value the peer itself marks as bad
    quality) and `_failed` (the connection is down). docs/extending.md has the contract.
    """

    def __init__(
        self,
        plc: Plc,
        sink: SampleSink,
        *,
        driver: PlcDriver | None = None,
        max_backoff_s: float = 30.0,
        on_change: Callable[[CollectorBase], None] | None = None,
        phase_s: float = 0.0,
    ) -> None:
        self.plc = plc
        self._sink = sink
        self._period = plc.poll_interval_ms / 1000
        self._max_backoff_s = max_backoff_s
        self._on_change = on_change
        self._phase_s = phase_s % self._period
        self.cycles = 0
        self.missed = 0
        self.failures = 0  # all failed reads since start
        self.consecutive_errors = 0
        self.last_good: datetime | None = None
        self.last_error: str | None = None
        self.failing_since: datetime | None = None
        # Non-finite values rejected, per metric, since start; and the metrics whose latest
        # value was one (their episode is logged once, when it starts and when it ends).
        self.bad_samples: dict[str, int] = {}
        self._bad_now: set[str] = set()
        # How late each of the last cycles started against its slot (seconds); the jitter
        # benchmark reads it. Bounded small: a long-running ingest of 200 PLCs must not keep
        # hundreds of megabytes of history.
        self.lateness: deque[float] = deque(maxlen=LATENESS_KEPT)

    @property
    def period_s(self) -> float:
        return self._period

    @property
    def phase_s(self) -> float:
        return self._phase_s

    async def run(self) -> None:
        raise NotImplementedError

    def _deliver(self, when: datetime, mono: float, values: dict[str, float]) -> None:
        """Hand one set of good values, read or received at `when`, to the sink: a delivery
        is a cycle, it ends a failure episode, and non-finite values are counted, not sent."""
        # The first good sample is news too: the status goes from starting to ok.
        recovered = self.consecutive_errors > 0 or self.cycles == 0
        self.consecutive_errors = 0
        self.failing_since = None
        self.last_good = when
        self.cycles += 1
        news = False
        if self._bad_now or not all(map(math.isfinite, values.values())):
            values, news = self._reject_non_finite(values)
        self._sink(self.plc, when, mono, values)
        if news and not recovered:
            self._notify()
        if recovered:
            log.info("PLC %s answers", self.plc.id)
            self._notify()

    def _reject_non_finite(self, values: dict[str, float]) -> tuple[dict[str, float], bool]:
        """The finite values, and whether a metric's quality changed (went bad or recovered)."""
        good: dict[str, float] = {}
        news = False
        for name, value in values.items():
            if math.isfinite(value):
                good[name] = value
                if name in self._bad_now:
                    self._bad_now.discard(name)
                    news = True
                    log.info("PLC %s: %s has good values again", self.plc.id, name)
                continue
            self.bad_samples[name] = self.bad_samples.get(name, 0) + 1
            if name not in self._bad_now:
                self._bad_now.add(name)
                news = True
                log.warning(
                    "PLC %s: %s read %r, not a number it can measure: rejected, counted as "
                    "bad quality (check the sensor)",
                    self.plc.id,
                    name,
                    value,
                )
        return good, news

    def _failed(self, error: str, backoff: float) -> None:
        self.failures += 1
        self.consecutive_errors += 1
        self.last_error = error
        if self.failing_since is None:
            self.failing_since = datetime.now(UTC)
        log.warning("%s (attempt %d, retry in %.1f s)", error, self.consecutive_errors, backoff)
        self._notify()

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change(self)

    def _bad(self, name: str, why: str) -> None:
        """One value of metric `name` that the peer marked as not good (a status code, a
        type the plant file does not expect): counted as bad quality, not a sample; logged
        once per episode, which ends at the metric's next good value."""
        self.bad_samples[name] = self.bad_samples.get(name, 0) + 1
        if name not in self._bad_now:
            self._bad_now.add(name)
            log.warning("PLC %s: %s: %s; counted as bad quality", self.plc.id, name, why)
            self._notify()


class Collector(CollectorBase):
    """The polling collector every protocol without a push collector of its own uses."""

    def __init__(
        self,
        plc: Plc,
        sink: SampleSink,
        *,
        driver: PlcDriver | None = None,
        max_backoff_s: float = 30.0,
        on_change: Callable[[CollectorBase], None] | None = None,
        phase_s: float = 0.0,
    ) -> None:
        super().__init__(
            plc, sink, max_backoff_s=max_backoff_s, on_change=on_change, phase_s=phase_s
        )
        self._driver = driver or driver_for(plc)

    def _next_slot(self, now: float) -> float:
        """The first slot of this collector's cadence at or after `now`."""
        offset = (now - self._phase_s) % self._period
        return now if offset == 0 else now - offset + self._period

    async def run(self) -> None:
        backoff = self._period
        next_at = self._next_slot(time.monotonic())
        # The same list every cycle: drivers keep their read plan for it.
        points: list[Point] = list(self.plc.metrics)
        try:
            await asyncio.sleep(next_at - time.monotonic())
            while True:
                _raise_if_cancelling()
                mono = time.monotonic()
                self.lateness.append(mono - next_at)
                try:
                    values = await self._driver.read_points(points)
                    when = datetime.now(UTC)
                except PlcError as exc:
                    _raise_if_cancelling()
                    self._failed(str(exc), backoff)
                    await self._driver.close()
                    next_at = self._next_slot(time.monotonic() + backoff)
                    await asyncio.sleep(next_at - time.monotonic())
                    backoff = min(backoff * 2, self._max_backoff_s)
                    continue
                backoff = self._period
                self._deliver(when, mono, values)
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


def collector_for(
    plc: Plc,
    sink: SampleSink,
    *,
    driver: PlcDriver | None = None,
    max_backoff_s: float = 30.0,
    on_change: Callable[[CollectorBase], None] | None = None,
    phase_s: float = 0.0,
) -> CollectorBase:
    """The collector of the PLC's protocol: its push collector when the protocol registry
    names one (imported when first needed, like the drivers), else the polling Collector."""
    path = PROTOCOLS[plc.protocol].collector
    cls: type[CollectorBase] = Collector
    if path is not None:
        module, _, name = path.partition(":")
        cls = getattr(importlib.import_module(module), name)
    return cls(
        plc,
        sink,
        driver=driver,
        max_backoff_s=max_backoff_s,
        on_change=on_change,
        phase_s=phase_s,
    )


def _raise_if_cancelling() -> None:
    """Client libraries sometimes swallow a cancellation (turning it into an I/O error or a
    late reply); the request is still pending on the task, and stopping must still stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
