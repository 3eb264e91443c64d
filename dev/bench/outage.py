"""`alarm_outage`: drift alarms on 50 PLC·metric pairs while Temporal is unreachable for 60 s.

The real ingest polls simulated Modbus PLCs and talks to Temporal through a TCP proxy that is
cut for the outage. value = alarms without a workflow once Temporal is back and the outbox has
had time to deliver (goal 0); delivered_s_p99 = seconds from Temporal's return to each alarm's
row being delivered; duplicates = runs or add_evidence signals beyond one per alarm (goal 0).
Anchor: the same outage for the direct signal-with-start the ingest used before the outbox
(`WorkflowStarter.start`, which logs and returns on failure) — the alarms it loses.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from dev.bench.drift import _alert, _terminate_open, temporal_client
from dev.fakes.server import free_port
from dev.simulator.modbus import SimulatedModbusPlc
from dev.simulator.signals import FaultKind
from factorylm.models.drift import drift_workflow_id
from factorylm.plant import Plant
from factorylm.settings import Settings
from factorylm.temporal_client import connect
from factorylm.waiting import wait_for
from ingest.alerts import WorkflowStarter
from ingest.drift import DriftConfig
from ingest.service import IngestService

PLCS, METRICS = 10, 5  # 50 pairs


class _CutProxy:
    """TCP between the ingest and Temporal that refuses and drops connections while down."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.up = True
        self._open: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        t_reader, t_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._open += [writer, t_writer]

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(copy(reader, t_writer), copy(t_reader, writer))

    def cut(self) -> None:
        self.up = False
        for w in self._open:
            w.close()
        self._open.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


def _plant(tag: str) -> Plant:
    metrics = [
        {"name": f"m{j}", "register": 2 * j, "type": "f32", "baseline": {"mean": 10.0, "std": 1.0}}
        for j in range(METRICS)
    ]
    return Plant.model_validate(
        {
            "name": "bench-outage",
            "plcs": [
                {
                    "id": f"outage-{tag}-{i}",
                    "vendor": "generic_modbus",
                    "protocol": "modbus_tcp",
                    "port": free_port(),
                    "poll_interval_ms": 100,
                    "metrics": metrics,
                }
                for i in range(PLCS)
            ],
        }
    )


async def _duplicates(client: Client, workflow_id: str) -> int:
    runs = [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    if not runs:
        return 0
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    signals = sum(
        e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED for e in history.events
    )
    return len(runs) - 1 + max(signals - 1, 0)


async def _exists(client: Client, workflow_id: str) -> bool:
    return bool([w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")])


async def alarm_outage(settings: Settings, outage_s: float = 60.0) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    plant = _plant(tag)
    queue = f"bench-outage-{tag}"  # nobody polls it: workflows are started, not run
    # Flood handling off (alarm_flood_alarms): these alarms come faster than 10 per 10 minutes
    # by design, and the figure is the hand-off to the workflow, not the grouped message.
    s = settings.model_copy(update={"task_queue": queue, "alarm_flood_alarms": 0})
    ids = [drift_workflow_id(p.site, p.id, m.name) for p in plant.plcs for m in p.metrics]
    sims = [SimulatedModbusPlc(p, seed=i) for i, p in enumerate(plant.plcs)]
    for sim in sims:
        await sim.start()
    pool = await asyncpg.create_pool(settings.pg_dsn, min_size=1, max_size=2)
    try:
        async with temporal_client(s) as client:
            proxy = _CutProxy(int(s.temporal_address.rsplit(":", 1)[1]))
            await proxy.start()
            via_proxy = await connect(s, address=f"127.0.0.1:{proxy.port}")
            ingest = IngestService(
                s, plant, via_proxy, drift=DriftConfig(window_s=1.0, min_samples=3)
            )
            await ingest.start()
            try:
                await wait_for(
                    "samples from every PLC",
                    lambda: all(c.cycles >= 5 for c in ingest.collectors),
                    timeout_s=60,
                )
                proxy.cut()
                cut_at = time.monotonic()
                for sim in sims:
                    for m in sim.plc.metrics:
                        sim.inject(m.name, FaultKind.STEP, 8.0)
                # The anchor: the pre-outbox direct path, same outage, 50 alarms of its own.
                direct = WorkflowStarter(via_proxy, queue)
                anchor_ids = [f"{i}-direct" for i in ids]
                anchor_alarms = [
                    _alert(p.id, f"{m.name}-direct", 3.0) for p in plant.plcs for m in p.metrics
                ]
                anchor = asyncio.gather(*(direct.start(a) for a in anchor_alarms))

                async def saved() -> bool:
                    n = await pool.fetchval(
                        "SELECT count(*) FROM alarm_outbox WHERE workflow_id = ANY($1::text[])",
                        ids,
                    )
                    return bool(n == len(ids))

                await wait_for("50 alarms in the outbox", saved, timeout_s=outage_s)
                # The outage itself: a benchmark's fixed interval, not a wait for a condition.
                await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - cut_at)))
                await anchor
                proxy.up = True
                back = datetime.now(UTC)
                real_outage = time.monotonic() - cut_at

                async def delivered() -> bool:
                    n = await pool.fetchval(
                        """SELECT count(*) FROM alarm_outbox
                           WHERE workflow_id = ANY($1::text[]) AND delivered_at IS NULL""",
                        ids,
                    )
                    return bool(n == 0)

                try:
                    await wait_for("every alarm delivered", delivered, timeout_s=120)
                except TimeoutError:
                    pass  # counted below as alarms without a workflow
                rows = await pool.fetch(
                    """SELECT workflow_id, delivered_at, attempts FROM alarm_outbox
                       WHERE workflow_id = ANY($1::text[])""",
                    ids,
                )
            finally:
                await ingest.stop()
            missing = [i for i in ids if not await _exists(client, i)]
            dups = sum([await _duplicates(client, i) for i in ids])
            anchor_lost = sum([not await _exists(client, i) for i in anchor_ids])
            await _terminate_open(client, queue)
            await proxy.close()
    finally:
        await pool.close()
        for sim in sims:
            await sim.stop()
    delays = sorted((r["delivered_at"] - back).total_seconds() for r in rows if r["delivered_at"])
    p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))] if delays else None
    return {
        "bench": "alarm_outage",
        "value": len(missing),
        "unit": "alarms without a workflow",
        "anchor": anchor_lost,
        "ratio": round(len(missing) / anchor_lost, 3) if anchor_lost else None,
        "alarms": len(rows),
        "pairs": len(ids),
        "outage_s": round(real_outage, 1),
        "delivered_s_p99": round(p99, 2) if p99 is not None else None,
        "delivered_s_median": round(statistics.median(delays), 2) if delays else None,
        "duplicates": dups,
        "attempts_max": max((r["attempts"] for r in rows), default=0),
    }
