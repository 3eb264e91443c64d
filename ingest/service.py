"""The ingest process: a collector per PLC feeding the batch writer and the drift detector."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import asyncpg
from temporalio.client import Client

from factorylm.plant import Plant, Plc
from factorylm.settings import Settings
from ingest.alarms import AlarmConfig, AlarmGate
from ingest.alert_notifier import OutboundNotifier
from ingest.alerts import WorkflowStarter
from ingest.baselines import BaselineLoader
from ingest.commands import CommandListener
from ingest.drift import DriftConfig, DriftDetector
from ingest.forecast import ForecastPublisher
from ingest.manager import CollectorManager, Notifier, ingest_name
from ingest.outbox import AlarmOutbox, OutboxConfig
from ingest.spool import Spool
from ingest.writer import BatchWriter

log = logging.getLogger(__name__)

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class IngestService:
    def __init__(
        self,
        settings: Settings,
        plant: Plant,
        client: Client,
        *,
        drift: DriftConfig | None = None,
        notifier: Notifier | None = None,
        outbox: OutboxConfig | None = None,
        alarms: AlarmConfig | None = None,
    ) -> None:
        self.writer = BatchWriter(
            settings.pg_dsn,
            max_rows=settings.batch_max_rows,
            max_delay_s=settings.batch_max_delay_s,
            buffer_rows=settings.buffer_max_rows,
            # Store-and-forward: what PostgreSQL cannot take waits on disk (ingest/spool.py).
            spool=Spool(
                settings.spool_path,
                max_bytes=settings.spool_max_bytes,
                fsync_interval_s=settings.spool_fsync_s,
            )
            if settings.spool_enabled
            else None,
        )
        self.starter = WorkflowStarter(client, settings.task_queue)
        # Alarms reach Temporal only through the outbox: saved in PostgreSQL first, then
        # delivered and retried until Temporal has them (ingest/outbox.py).
        self.outbox = AlarmOutbox(
            settings.pg_dsn, self.starter, config=outbox, host=ingest_name(plant)
        )
        # Between the detector and the outbox, alarm management (ISA-18.2, ingest/alarms.py):
        # codes, shelving, suppression of a silent PLC's alarms, floods, chattering.
        self.alarms = AlarmGate(
            settings.pg_dsn,
            plant,
            self.outbox,
            client=client,
            config=alarms or AlarmConfig.from_settings(settings, plant),
        )
        self.detector = DriftDetector(
            drift or DriftConfig(),
            self.alarms,
            vendors={p.id: p.vendor for p in plant.plcs},
            sites={p.id: p.site for p in plant.plcs},
            units={(p.id, m.name): m.unit for p in plant.plcs for m in p.metrics},
        )
        for plc in plant.plcs:
            for metric in plc.metrics:
                self.detector.set_baseline(
                    plc.id, metric.name, metric.baseline, metric.drift_threshold_sigma
                )
        self.detector.configure_plant(plant)  # CUSUM, EWMA, stuck, limits: where the file sets them
        # Computed baselines (the baseline workflow) replace the plant file's starting values.
        self.baselines = BaselineLoader(settings.pg_dsn, self.detector.set_baseline)
        # Time-to-threshold forecasts into PostgreSQL once a minute, for GET /forecasts.
        self.forecasts = ForecastPublisher(
            settings.pg_dsn, self.detector.forecasts, [p.id for p in plant.plcs]
        )
        # The manager supervises one collector per PLC and alerts after repeated failures.
        self.manager = CollectorManager(
            plant,
            self._on_samples,
            dsn=settings.pg_dsn,
            # Collector alerts reach the person on call (ingest/alert_notifier.py).
            notifier=notifier or OutboundNotifier(settings, client),
            writer=self.writer,
        )
        self.collectors = self.manager.collectors
        self.alarms.alarmed = self.detector.alarmed
        self.alarms.offline = self._offline
        self.commands = CommandListener(settings.pg_dsn, self.manager.restart)
        self.detecting = False
        self._started: set[str] = set()
        self._late_start: asyncio.Task[None] | None = None

    def _on_samples(self, plc: Plc, when: datetime, mono: float, values: dict[str, float]) -> None:
        self.writer.add((when, plc.id, name, value) for name, value in values.items())
        if not self.detecting:
            return  # started while PostgreSQL was away: stored (spooled), not yet judged
        for name, value in values.items():
            self.detector.observe(plc.id, name, mono, value, when)
        self.alarms.samples(plc.id, values)

    def _offline(self, plc_id: str) -> bool:
        """A PLC whose collector is failing or stale: its drift alarms are consequences."""
        collector = next((c for c in self.collectors if c.plc.id == plc_id), None)
        return collector is not None and self.manager.state(collector) in ("failing", "stale")

    async def start(self) -> None:
        """Sampling first, then detection. An edge rebooted while the central database is
        away (with a spool) starts collecting at once into the spool; detection, which needs
        the baselines, the shelves and the alarm outbox from PostgreSQL, follows when it
        answers. Without a spool an unreachable database fails the start, as before."""
        self.writer.start()
        await self.manager.start()
        try:
            await self._start_detection()
        except _DB_ERRORS as exc:
            if self.writer.spool is None:
                await self.manager.stop()
                await self.writer.stop()
                raise
            log.warning(
                "PostgreSQL unreachable at start (%s): collecting into the spool %s; drift "
                "detection starts when it answers",
                exc,
                self.writer.spool.directory,
            )
            self._late_start = asyncio.create_task(self._start_detection_later())
        log.info("ingest started: %d PLCs", len(self.collectors))

    async def _start_detection(self) -> None:
        # Each part once, in order, so that a retry after a partial start resumes where it was.
        if "baselines" not in self._started:
            await self.baselines.start()
            self._started.add("baselines")
        if "forecasts" not in self._started:
            self.forecasts.start()
            self._started.add("forecasts")
        if "alarms" not in self._started:
            await self.alarms.start()  # the points' codes and open shelves, before any alarm
            self._started.add("alarms")
        if "outbox" not in self._started:
            self.outbox.start()  # delivers what a previous ingest left pending, too
            self._started.add("outbox")
        if "commands" not in self._started:
            await self.commands.start()
            self._started.add("commands")
        self.detecting = True

    async def _start_detection_later(self) -> None:
        backoff = 1.0
        while True:
            await asyncio.sleep(backoff)
            try:
                await self._start_detection()
            except _DB_ERRORS as exc:
                log.info("PostgreSQL still unreachable (%s); detection waits", exc)
                backoff = min(backoff * 2, 30.0)
                continue
            log.info("PostgreSQL answers: drift detection started")
            return

    async def stop(self) -> None:
        """Stop polling, then flush every accepted sample before returning."""
        if self._late_start is not None:
            self._late_start.cancel()
            await asyncio.gather(self._late_start, return_exceptions=True)
        if "commands" in self._started:
            await self.commands.stop()
        await self.manager.stop()
        if "alarms" in self._started:
            await self.alarms.stop()
        if "outbox" in self._started:
            await self.outbox.stop()  # undelivered alarms stay in the outbox for the next start
        if "baselines" in self._started:
            await self.baselines.stop()
        if "forecasts" in self._started:
            await self.forecasts.stop()
        await self.writer.stop()
        await self.manager.close()  # records the writer's final counters
        log.info(
            "ingest stopped: %d samples written, %d dropped",
            self.writer.written,
            self.writer.dropped,
        )
