"""The product's processes, startable together in one event loop (demo, tests) or one by one
(`factorylm worker|ingest|api`): workers, ingest and the API over a shared database pool.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.plc_write import PlcWriteActivities
from api.app import create_app
from api.serving import AppServer
from factorylm.db.pool import DatabaseUnavailable, create_pool, prepare_database
from factorylm.plant import Plant
from factorylm.settings import Settings, SettingsError, unsafe_listener
from factorylm.temporal_client import ensure_search_attributes
from ingest.drift import DriftConfig
from ingest.publisher import EventPublisher
from ingest.service import IngestService
from temporal.schedules import ensure_schedules
from workers import agents, plc_edge

log = logging.getLogger(__name__)


def drift_config(settings: Settings) -> DriftConfig:
    return DriftConfig(
        window_s=settings.drift_window_s,
        threshold_sigma=settings.drift_threshold_sigma,
        clear_sigma=settings.drift_clear_sigma,
        on_delay_s=settings.drift_on_delay_s,
        forecast_horizon_s=settings.drift_forecast_horizon_s,
    )


@dataclass
class Stack:
    settings: Settings
    plant: Plant
    client: Client
    run_agents_worker: bool = True
    run_edge_worker: bool = True
    run_ingest: bool = True
    run_api: bool = True
    pool: asyncpg.Pool | None = None
    ingest: IngestService | None = None
    _workers: list[Worker] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _api: AppServer | None = None
    _closers: list[PlcWriteActivities] = field(default_factory=list)
    publisher: EventPublisher | None = None

    async def start(self) -> None:
        # Before anything starts: an API reachable from elsewhere with a default secret.
        problem = unsafe_listener(self.settings) if self.run_api else None
        if problem:
            raise SettingsError(f"refusing to start the API: {problem}")
        ingest_only = self.run_ingest and not (
            self.run_agents_worker or self.run_edge_worker or self.run_api
        )
        try:
            await prepare_database(self.settings)
        except DatabaseUnavailable as exc:
            # An edge's ingest rebooted during a central-database outage still collects, into
            # its spool (ingest/service.py); everything else needs the database to start.
            if not (ingest_only and self.settings.spool_enabled):
                raise
            log.warning("%s; the ingest starts anyway and spools", exc)
        if not ingest_only:
            self.pool = await create_pool(self.settings)
        if self.run_agents_worker:
            # Before workflows start with a newer attribute (Site) than the namespace knows.
            await ensure_search_attributes(self.client)
            await ensure_schedules(self.client, self.settings, self.plant)
            self._workers.append(
                agents.build_worker(self.client, self.pool, self.plant, self.settings)
            )
        if self.run_edge_worker:
            # One edge worker per site, each on its own queue with its own catalog: an edge
            # process has one site's plant; the all-in-one `serve` runs every site's.
            for site in self.plant.site_names:
                edge_worker, writes = plc_edge.build_worker(
                    self.client, self.pool, self.plant, self.settings, site
                )
                self._workers.append(edge_worker)
                self._closers.append(writes)
        for worker in self._workers:
            self._tasks.append(asyncio.create_task(worker.run()))
        if self.run_agents_worker and self.plant.publish is not None:
            # The agents worker's process publishes the plant's events to its broker: its
            # database role already reads every audit table the events come from.
            self.publisher = EventPublisher(self.plant, self.pool)
            self.publisher.start()
        if self.run_ingest:
            self.ingest = IngestService(
                self.settings, self.plant, self.client, drift=drift_config(self.settings)
            )
            await self.ingest.start()
        if self.run_api:
            self._api = AppServer(
                create_app(self.settings, self.client, self.pool),
                self.settings.api_host,
                self.settings.api_port,
            )
            await self._api.start()  # raises the bind error, e.g. port in use

    async def stop(self) -> None:
        """Ingest first (flushes every accepted sample), then the API, then the workers."""
        if self.ingest is not None:
            await self.ingest.stop()
        if self._api is not None:
            await self._api.stop()
        if self.publisher is not None:
            await self.publisher.stop()
        for worker in self._workers:
            await worker.shutdown()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for closer in self._closers:
            await closer.close()
        if self.pool is not None:
            await self.pool.close()
