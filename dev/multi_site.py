"""Several sites on one central stack, each on a host of its own (dev/netns.py): the
multi-site test's and the `multi_site` benchmark's rig.

Each site's network namespace runs that site's simulated PLCs (on its own loopback, so only
its own edge reaches them) and its edge process, `factorylm edge --site NAME`, which reaches
PostgreSQL and Temporal only through the centre's address. The central stack — the agents
worker, in this process — serves every site. The plant file lists the sites, each in its own
file (dev/site_plant.py); every host reads the same files, as configuration management would
hand them out.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import asyncpg
import httpx
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowHandle

from app.stack import Stack
from dev.netns import HostProcess, TestNetwork
from dev.site_plant import write_site_plant
from factorylm.models.drift import DriftResponseResult, drift_workflow_id
from factorylm.plant import Plant
from factorylm.settings import Settings
from factorylm.waiting import wait_for
from ingest.manager import ingest_name

PLC_PORT = 15020  # every site's PLCs on the same port: each site has its own loopback
POLL_MS = 250
FAULT_METRIC = "pressure"


@dataclass
class SiteNode:
    name: str
    plcs: list[str]
    simulator: HostProcess | None = None
    edge: HostProcess | None = None


@dataclass
class MultiSite:
    """`async with MultiSite(settings, client, ["north", "south"], workdir) as ms:`"""

    settings: Settings
    client: Client
    site_names: Sequence[str]
    workdir: Path
    plcs_per_site: int = 1
    poll_ms: int = POLL_MS
    queue: str = field(default_factory=lambda: f"sites-{uuid.uuid4().hex[:8]}")
    # In every PLC id: runs that share a database and a Temporal namespace never share a
    # workflow id, nor an alarm left in the outbox by a run that was killed.
    tag: str = field(default_factory=lambda: f"r{uuid.uuid4().hex[:4]}")
    # Further FACTORYLM_* settings of the edges (name → value), e.g. a benchmark's named
    # departure from a default.
    edge_settings: dict[str, str] = field(default_factory=dict)
    net: TestNetwork | None = None
    plant: Plant | None = None
    central: Stack | None = None
    nodes: dict[str, SiteNode] = field(default_factory=dict)
    pool: asyncpg.Pool | None = None

    @property
    def central_settings(self) -> Settings:
        return self.settings.model_copy(
            update={
                "task_queue": self.queue,
                "plc_task_queue": f"{self.queue}-edge",
                "plant_file": self.workdir / "plant.yaml",
            }
        )

    async def __aenter__(self) -> MultiSite:
        ports = {s: [PLC_PORT + i for i in range(self.plcs_per_site)] for s in self.site_names}
        self.plant, path = write_site_plant(
            self.workdir,
            ports,
            site_options=lambda _s: {"poll_interval_ms": self.poll_ms, "tag": self.tag},
        )
        self.net = TestNetwork(list(self.site_names), log_dir=self.workdir / "logs")
        await self.net.__aenter__()
        try:
            await self._start(path)
        except BaseException:
            await self.__aexit__(*sys.exc_info())
            raise
        return self

    async def _start(self, path: Path) -> None:
        assert self.net is not None and self.plant is not None
        central = self.central_settings
        for site in self.plant.sites:
            node = self.nodes[site.name] = SiteNode(site.name, [p.id for p in site.plcs])
            node.simulator = await self.net.simulate(
                site.name, self.workdir / "sites" / f"{site.name}.yaml"
            )
        for site in self.plant.sites:
            env = self.net.site_env(
                central,
                plant_file=str(path),
                task_queue=central.task_queue,
                plc_task_queue=central.plc_task_queue,
                spool_enabled="true",
                spool_dir=str(self.workdir / "spool" / site.name),
                **self.edge_settings,
            )
            self.nodes[site.name].edge = self.net.run_in(
                site.name,
                [sys.executable, "-m", "app.cli", "edge", "--site", site.name],
                env,
                name=f"{site.name}-edge",
            )
        self.pool = await asyncpg.create_pool(central.pg_dsn, min_size=1, max_size=4)
        self.central = Stack(
            central,
            self.plant,
            self.client,
            run_edge_worker=False,
            run_ingest=False,
            run_api=False,
        )
        await self.central.start()
        for name in self.plant.site_names:
            await self.edge_ready(name)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.central is not None:
            await self.central.stop()
        if self.net is not None:
            # The edges first: nothing may write this run's rows once they are removed.
            await self.net.__aexit__(exc_type, exc, tb)
            self.net = None
        if self.pool is not None:
            ids = [plc for node in self.nodes.values() for plc in node.plcs]
            for table in ("alarm_outbox", "samples", "collector_status"):
                column = "workflow_id" if table == "alarm_outbox" else "plc_id"
                pattern = "drift-%-" if table == "alarm_outbox" else ""
                await self.pool.execute(
                    f"DELETE FROM {table} WHERE {column} LIKE ANY($1)",
                    [f"{pattern}{plc}%" for plc in ids],
                )
            # Its edges' status rows too: a later health monitor in this database must not
            # watch spools of edges that are gone.
            await self.pool.execute(
                "DELETE FROM ingest_writer_status WHERE host = ANY($1)",
                [ingest_name(self.plant.for_site(s)) for s in self.nodes] if self.plant else [],
            )
            await self.pool.close()

    # -- what the tests and the benchmark ask ------------------------------------------------

    async def edge_ready(self, site: str, timeout_s: float = 120.0) -> None:
        """The site's edge polls its queue and its collectors have written samples."""
        assert self.pool is not None
        queue = self.central_settings.edge_queue(site)
        node = self.nodes[site]

        async def polling() -> bool:
            if node.edge is not None and node.edge.returncode is not None:
                raise RuntimeError(f"edge {site} exited: {node.edge.output()[-2000:]}")
            resp = await self.client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.client.namespace,
                    task_queue=TaskQueue(name=queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
                )
            )
            return bool(resp.pollers)

        async def sampling() -> bool:
            assert self.pool is not None
            n = await self.pool.fetchval(
                "SELECT count(*) FROM samples WHERE plc_id = ANY($1) AND time > now() - '5 s'::interval",
                node.plcs,
            )
            return bool(n)

        await wait_for(f"edge {site} polling {queue}", polling, timeout_s=timeout_s)
        await wait_for(f"samples from {site}", sampling, timeout_s=timeout_s)

    async def inject_now(
        self, site: str, plc: str, metric: str, size: float, kind: str = "step"
    ) -> float:
        """A fault through the site simulator's control channel, over the rig's own window into
        the site (not across its link); returns the time (epoch s) just before it was sent."""
        assert self.net is not None
        host, port = self.net.expose(site, 15099).listen
        body = {"plc": plc, "metric": metric, "kind": kind, "size": size}
        async with httpx.AsyncClient(timeout=10) as http:
            sent = time.time()
            response = await http.post(f"http://{host}:{port}/faults", json=body)
        response.raise_for_status()
        return sent

    async def clear_now(self, site: str, plc: str) -> None:
        assert self.net is not None
        host, port = self.net.expose(site, 15099).listen
        async with httpx.AsyncClient(timeout=10) as http:
            (
                await http.delete(f"http://{host}:{port}/faults", params={"plc": plc})
            ).raise_for_status()

    def workflow_id(self, site: str, plc_index: int = 0, metric: str = FAULT_METRIC) -> str:
        return drift_workflow_id(site, self.nodes[site].plcs[plc_index], metric)

    async def fault(self, site: str, plc_index: int = 0, size: str = "8") -> None:
        assert self.net is not None
        await self.net.inject(
            site,
            plc=self.nodes[site].plcs[plc_index],
            kind="step",
            metric=FAULT_METRIC,
            size=size,
        )

    async def clear(self, site: str, plc_index: int = 0) -> None:
        assert self.net is not None
        plc = self.nodes[site].plcs[plc_index]
        argv = [sys.executable, "-m", "app.cli", "simulate", "clear", "--plc", plc]
        done = await self.net.exec_in(site, [*argv, "--control-port", "15099"])
        if done.returncode != 0:
            raise RuntimeError(f"clearing {plc} at {site} failed: {done.stderr.strip()}")

    async def answered(
        self, site: str, *, timeout_s: float = 120.0, since: float | None = None
    ) -> tuple[DriftResponseResult, str]:
        """The site's drift response, completed, and the identity of the worker that ran its
        PLC write (`pid@host`)."""
        handle: WorkflowHandle[object, DriftResponseResult] = self.client.get_workflow_handle(
            self.workflow_id(site), result_type=DriftResponseResult
        )

        async def done() -> DriftResponseResult | None:
            try:
                desc = await handle.describe()
            except Exception:
                return None
            if since is not None and desc.start_time.timestamp() < since:
                return None
            if desc.status is None or desc.status.name != "COMPLETED":
                return None
            return await handle.result()

        result = await wait_for(f"{site}'s drift response", done, timeout_s=timeout_s)
        assert isinstance(result, DriftResponseResult)
        writer = ""
        scheduled: set[int] = set()
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = event.activity_task_scheduled_event_attributes
                if attrs.activity_type.name == "write_plc_setpoint":
                    scheduled.add(event.event_id)
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started = event.activity_task_started_event_attributes
                if started.scheduled_event_id in scheduled:
                    writer = started.identity
        return result, writer

    def edge_pid(self, site: str) -> int:
        edge = self.nodes[site].edge
        assert edge is not None
        return edge.pid

    def pids_of(self, site: str) -> set[int]:
        """The edge's process and whatever it started (one process group)."""
        pgid = self.edge_pid(site)
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getpgid(int(entry)) == pgid:
                        found.add(int(entry))
                except OSError:
                    continue
        return found

    async def missing_slots(self, site: str, start: float, end: float) -> int:
        """Poll slots of the site's PLCs between two times (epoch s) with no stored sample: a
        gap between consecutive stored samples of a metric counts from 1.9 poll intervals (a
        late poll is not a missing one)."""
        assert self.pool is not None
        interval = self.poll_ms / 1000
        n = await self.pool.fetchval(
            """SELECT coalesce(sum(greatest(round(gap / $4) - 1, 0)), 0) FROM (
                   SELECT extract(epoch FROM time - lag(time) OVER w) AS gap
                   FROM samples
                   WHERE plc_id = ANY($1) AND time BETWEEN to_timestamp($2) AND to_timestamp($3)
                   WINDOW w AS (PARTITION BY plc_id, metric ORDER BY time)
               ) gaps WHERE gap >= 1.9 * $4""",
            self.nodes[site].plcs,
            start,
            end,
            interval,
        )
        return int(n)

    async def stored(self, site: str, start: float, end: float) -> int:
        assert self.pool is not None
        n = await self.pool.fetchval(
            """SELECT count(*) FROM samples WHERE plc_id = ANY($1)
               AND time BETWEEN to_timestamp($2) AND to_timestamp($3)""",
            self.nodes[site].plcs,
            start,
            end,
        )
        return int(n)

    async def spool_state(self, site: str) -> asyncpg.Record | None:
        assert self.pool is not None
        return await self.pool.fetchrow(
            "SELECT * FROM ingest_writer_status WHERE host LIKE '%/' || $1", site
        )
