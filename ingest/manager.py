"""The collector manager: supervises one collector per PLC, keeps `collector_status`, and
raises an alert when a PLC fails 3 times in a row. A metric whose values stop being finite
numbers (rejected by its collector) is a state change too: its count is written at once.

Isolation: every collector is its own task, blocking clients run on their PLC's own thread,
and everything the manager does with the database runs in its own tasks, so a PLC that hangs
or a database that is down never delays another PLC's poll.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from factorylm.db.pool import close_pool
from factorylm.drivers import PlcDriver
from factorylm.plant import Plant
from ingest.collector import CollectorBase, SampleSink, collector_for
from ingest.writer import BatchWriter

log = logging.getLogger(__name__)

ALERT_CHANNEL = "log"
ALERT_RECIPIENT = "operations"


@dataclass(frozen=True)
class CollectorAlert:
    """A PLC stopped answering: handed to the notifier (WhatsApp, later) and recorded."""

    plc_id: str
    vendor: str
    protocol: str
    consecutive_errors: int
    last_error: str
    failing_since: datetime
    dedup_key: str
    body: str


Notifier = Callable[[CollectorAlert], Awaitable[None] | None]


def _alert_for(collector: CollectorBase) -> CollectorAlert:
    plc = collector.plc
    since = collector.failing_since or datetime.now(UTC)
    where = plc.serial_port if plc.serial_port else f"{plc.host}:{plc.tcp_port}"
    body = (
        f"PLC {plc.id} ({plc.vendor}, {plc.protocol} at {where}) has failed "
        f"{collector.consecutive_errors} polls in a row since {since:%Y-%m-%d %H:%M:%S} UTC: "
        f"{collector.last_error}. No samples are arriving from it; check its power, network "
        f"cable or serial line. The collector keeps retrying with backoff."
    )
    return CollectorAlert(
        plc_id=plc.id,
        vendor=plc.vendor,
        protocol=plc.protocol.value,
        consecutive_errors=collector.consecutive_errors,
        last_error=collector.last_error or "",
        failing_since=since,
        # One alert per PLC and failure episode, however often the manager is asked.
        dedup_key=f"collector/{plc.id}/{since.isoformat()}",
        body=body,
    )


def spread_phases(plant: Plant) -> dict[str, float]:
    """Each PLC's offset within its poll interval, in seconds.

    PLCs that share an interval are spread evenly across it. Each interval's group is then
    shifted by a different fraction of the smallest spacing of all groups, so groups start
    between each other's starts (never on them, whenever every spacing is a multiple of the
    smallest, as with 200 devices at 1 s beside two PLCs at 100 ms). Started together, those
    200 devices would all send their requests at once, and the last one would start its cycle
    milliseconds late every time.
    """
    groups: dict[int, list[str]] = {}
    for plc in plant.plcs:
        groups.setdefault(plc.poll_interval_ms, []).append(plc.id)
    smallest = min((ms / 1000 / len(ids) for ms, ids in groups.items()), default=0.0)
    phases: dict[str, float] = {}
    for g, (interval_ms, ids) in enumerate(sorted(groups.items())):
        spacing = interval_ms / 1000 / len(ids)
        shift = smallest * g / len(groups)
        for i, plc_id in enumerate(ids):
            phases[plc_id] = i * spacing + shift
    return phases


def ingest_name(plant: Plant) -> str:
    """The ingest's row in `ingest_writer_status`: its host, and the site an edge serves (edge
    hosts of several sites may share a name, e.g. one image's default hostname)."""
    host = socket.gethostname()
    return f"{host}/{plant.sites[0].name}" if len(plant.sites) == 1 else host


class CollectorManager:
    def __init__(
        self,
        plant: Plant,
        sink: SampleSink,
        *,
        dsn: str,
        notifier: Notifier | None = None,
        writer: BatchWriter | None = None,
        health_interval_s: float = 60.0,
        alert_after: int = 3,
        max_backoff_s: float = 30.0,
        drivers: dict[str, PlcDriver] | None = None,
    ) -> None:
        self._dsn = dsn
        self._notifier = notifier
        self._writer = writer
        self._health_interval_s = health_interval_s
        self._alert_after = alert_after
        self._host = ingest_name(plant)
        phases = spread_phases(plant)
        # Polling or push, whichever the PLC's protocol uses (factorylm.protocols).
        self.collectors: list[CollectorBase] = [
            collector_for(
                plc,
                sink,
                driver=(drivers or {}).get(plc.id),
                max_backoff_s=max_backoff_s,
                on_change=self._on_change,
                phase_s=phases[plc.id],
            )
            for plc in plant.plcs
        ]
        self.restarts: dict[str, int] = {c.plc.id: 0 for c in self.collectors}
        self.alerts: list[CollectorAlert] = []
        self._alerted: set[str] = set()
        self._pool: asyncpg.Pool | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._by_plc: dict[str, asyncio.Task[None]] = {}
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._started_at = time.monotonic()

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._started_at = time.monotonic()
        for collector in self.collectors:
            self._by_plc[collector.plc.id] = asyncio.create_task(
                self._supervise(collector), name=f"collect-{collector.plc.id}"
            )
        self._tasks.append(asyncio.create_task(self._health_loop(), name="collector-health"))
        log.info("collector manager started: %d PLCs", len(self.collectors))

    async def stop(self) -> None:
        """Stop polling; the last samples are already in the sink."""
        tasks = [*self._tasks, *self._by_plc.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._by_plc.clear()
        # Status writes and alerts started by the collectors finish before the pool closes.
        if self._side_tasks:
            await asyncio.gather(*self._side_tasks, return_exceptions=True)

    async def restart(self, plc_id: str) -> bool:
        """Drop a collector's connection and start it afresh (asked by the health monitor).
        False when this process has no collector for that PLC."""
        collector = next((c for c in self.collectors if c.plc.id == plc_id), None)
        task = self._by_plc.get(plc_id)
        if collector is None or task is None:
            return False
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # its driver closes on the way out
        self.restarts[plc_id] += 1
        self._by_plc[plc_id] = asyncio.create_task(
            self._supervise(collector), name=f"collect-{plc_id}"
        )
        log.warning(
            "collector for %s restarted on request (restart %d)", plc_id, self.restarts[plc_id]
        )
        self._spawn(self._write_one(collector))
        return True

    async def close(self) -> None:
        """Record the final status (call it after the writer has flushed) and disconnect."""
        try:
            await self.write_status()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("could not record the final collector status: %s", exc)
        if self._pool is not None:
            await close_pool(self._pool, "collector manager")
            self._pool = None

    async def _supervise(self, collector: CollectorBase) -> None:
        """Run a collector; if it ever dies of something unexpected, restart it with backoff."""
        backoff = 1.0
        while True:
            started = time.monotonic()
            try:
                await collector.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.restarts[collector.plc.id] += 1
                collector.last_error = f"collector crashed: {exc!r}"
                log.exception(
                    "collector for %s crashed; restart in %.0f s", collector.plc.id, backoff
                )
                if time.monotonic() - started > 60:
                    backoff = 1.0
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)

    # -- failures and alerts --------------------------------------------------------------------
    def _on_change(self, collector: CollectorBase) -> None:
        if collector.consecutive_errors == 0:
            self._spawn(self._write_one(collector))
            return
        if collector.consecutive_errors < self._alert_after:
            return
        alert = _alert_for(collector)
        if alert.dedup_key in self._alerted:
            return
        self._alerted.add(alert.dedup_key)
        self.alerts.append(alert)
        log.error("ALERT %s", alert.body)
        self._spawn(self._raise(alert, collector))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _raise(self, alert: CollectorAlert, collector: CollectorBase) -> None:
        try:
            pool = await self._get_pool()
            await pool.execute(
                """INSERT INTO notifications (dedup_key, channel, recipient, body)
                   VALUES ($1, $2, $3, $4) ON CONFLICT (dedup_key) DO NOTHING""",
                alert.dedup_key,
                ALERT_CHANNEL,
                ALERT_RECIPIENT,
                alert.body,
            )
            await self._write_one(collector)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.error("could not record the alert for %s: %s", alert.plc_id, exc)
        if self._notifier is not None:
            try:
                result = self._notifier(alert)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("the notifier failed for the alert on %s", alert.plc_id)

    # -- health and status ----------------------------------------------------------------------
    def state(self, collector: CollectorBase) -> str:
        if collector.consecutive_errors > 0:
            return "failing"
        if collector.last_good is None:
            return "starting"
        age = (datetime.now(UTC) - collector.last_good).total_seconds()
        # Stale: no good sample for three periods (and at least 5 s) without a reported error,
        # e.g. a collector stuck behind a driver that never returns.
        return "stale" if age > max(3 * collector.period_s, 5.0) else "ok"

    def status(self) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        out = []
        for c in self.collectors:
            out.append(
                {
                    "plc_id": c.plc.id,
                    "vendor": c.plc.vendor,
                    "protocol": c.plc.protocol.value,
                    "state": self.state(c),
                    "poll_interval_ms": c.plc.poll_interval_ms,
                    "last_good_at": c.last_good,
                    "last_good_age_s": (now - c.last_good).total_seconds() if c.last_good else None,
                    "consecutive_errors": c.consecutive_errors,
                    "last_error": c.last_error,
                    "cycles": c.cycles,
                    "missed_cycles": c.missed,
                    "restarts": self.restarts[c.plc.id],
                    "failing_since": c.failing_since,
                    "bad_samples": dict(c.bad_samples),
                }
            )
        return out

    async def _health_loop(self) -> None:
        while True:
            try:
                await self.write_status()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("could not record collector status: %s", exc)
            for row in self.status():
                if row["state"] == "stale":
                    log.warning(
                        "PLC %s: no good sample for %.0f s", row["plc_id"], row["last_good_age_s"]
                    )
            await asyncio.sleep(self._health_interval_s)

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self._dsn, min_size=0, max_size=2, timeout=5)
        return self._pool

    async def _write_one(self, collector: CollectorBase) -> None:
        try:
            await self._upsert([r for r in self.status() if r["plc_id"] == collector.plc.id])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("could not record status of %s: %s", collector.plc.id, exc)

    async def write_status(self) -> None:
        await self._upsert(self.status())
        if self._writer is not None:
            pool = await self._get_pool()
            spool = self._writer.spool
            await pool.execute(
                """INSERT INTO ingest_writer_status
                       (host, samples_written, samples_pending, samples_dropped, last_error,
                        spool_bytes, spool_samples, spool_oldest, spool_dropped, backfilled,
                        backfill_rate, updated_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())
                   ON CONFLICT (host) DO UPDATE SET samples_written = EXCLUDED.samples_written,
                       samples_pending = EXCLUDED.samples_pending,
                       samples_dropped = EXCLUDED.samples_dropped,
                       last_error = EXCLUDED.last_error, spool_bytes = EXCLUDED.spool_bytes,
                       spool_samples = EXCLUDED.spool_samples,
                       spool_oldest = EXCLUDED.spool_oldest,
                       spool_dropped = EXCLUDED.spool_dropped, backfilled = EXCLUDED.backfilled,
                       backfill_rate = EXCLUDED.backfill_rate, updated_at = now()""",
                self._host,
                self._writer.written,
                self._writer.pending,
                self._writer.dropped + (spool.dropped if spool else 0),
                self._writer.last_error,
                spool.bytes if spool else 0,
                spool.pending_samples() if spool else 0,
                spool.oldest() if spool else None,
                spool.dropped if spool else 0,
                self._writer.backfilled,
                self._writer.backfill_rate,
            )

    async def _upsert(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        # Writes race (the periodic one, one per change): stamp each with when its snapshot
        # was taken — the rows were computed just before this call — and never let an older
        # snapshot overwrite a newer one.
        observed = datetime.now(UTC)
        pool = await self._get_pool()
        await pool.executemany(
            """INSERT INTO collector_status (plc_id, vendor, protocol, state, poll_interval_ms,
                   last_good_at, consecutive_errors, last_error, cycles, missed_cycles, restarts,
                   failing_since, updated_at, bad_samples)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb)
               ON CONFLICT (plc_id) DO UPDATE SET vendor = EXCLUDED.vendor,
                   protocol = EXCLUDED.protocol, state = EXCLUDED.state,
                   poll_interval_ms = EXCLUDED.poll_interval_ms,
                   last_good_at = EXCLUDED.last_good_at,
                   consecutive_errors = EXCLUDED.consecutive_errors,
                   last_error = EXCLUDED.last_error, cycles = EXCLUDED.cycles,
                   missed_cycles = EXCLUDED.missed_cycles, restarts = EXCLUDED.restarts,
                   failing_since = EXCLUDED.failing_since, updated_at = EXCLUDED.updated_at,
                   bad_samples = EXCLUDED.bad_samples
               WHERE collector_status.updated_at <= EXCLUDED.updated_at""",
            [
                (
                    r["plc_id"],
                    r["vendor"],
                    r["protocol"],
                    r["state"],
                    r["poll_interval_ms"],
                    r["last_good_at"],
                    r["consecutive_errors"],
                    r["last_error"],
                    r["cycles"],
                    r["missed_cycles"],
                    r["restarts"],
                    r["failing_since"],
                    observed,
                    json.dumps(r["bad_samples"]),
                )
                for r in rows
            ],
        )
