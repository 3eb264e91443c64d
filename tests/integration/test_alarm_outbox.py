"""The durable alarm hand-off on the real stack: drift alarms raised while Temporal is
unreachable (a TCP proxy between the ingest and the real Temporal dev server, cut and restored)
wait in the PostgreSQL outbox and each reaches exactly one workflow once Temporal is back; an
ingest restarted with pending rows delivers them; a row whose workflow was already started by
an attempt the previous process never recorded is not delivered a second time.

The plant is simulated by real Modbus peers (dev/simulator) polled by the real ingest."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from api.app import create_app
from dev.simulator.modbus import SimulatedModbusPlc
from dev.simulator.signals import FaultKind
from factorylm.models.drift import drift_workflow_id
from factorylm.plant import Plant
from factorylm.settings import Settings
from factorylm.temporal_client import connect
from helpers import TANK_METRICS, SwitchableProxy, make_alert, modbus_plant, until
from ingest.drift import DriftConfig
from ingest.outbox import AlarmOutbox, OutboxConfig, alarm_key
from ingest.service import IngestService

METRICS = ("level", "pressure", "temp")
# Short backoffs: the test's outage is ~10 s, and one attempt against an unreachable Temporal
# already lasts several seconds (the SDK's own retries inside the call).
FAST = OutboxConfig(backoff_initial_s=0.2, backoff_max_s=1.0, rpc_timeout_s=1.0)


def plant(n_plcs: int) -> Plant:
    tag = uuid.uuid4().hex[:6]
    return modbus_plant([f"outbox-{tag}-{i}" for i in range(n_plcs)], TANK_METRICS)


@dataclass
class Rig:
    settings: Settings
    plant: Plant
    sims: list[SimulatedModbusPlc]
    proxy: SwitchableProxy
    via_proxy: Client  # the ingest's client: through the proxy, so Temporal can "go away"
    client: Client  # the test's own, direct client
    pool: asyncpg.Pool

    def ingest(self, client: Client) -> IngestService:
        return IngestService(
            self.settings,
            self.plant,
            client,
            drift=DriftConfig(window_s=1.0, on_delay_s=0.0, min_samples=3),
            outbox=FAST,
        )

    @property
    def workflow_ids(self) -> list[str]:
        return [drift_workflow_id(p.site, p.id, m) for p in self.plant.plcs for m in METRICS]

    async def rows(self) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            "SELECT * FROM alarm_outbox WHERE workflow_id = ANY($1::text[]) ORDER BY id",
            self.workflow_ids,
        )
        return rows

    async def runs_and_signals(self, workflow_id: str) -> tuple[int, int]:
        """How many runs Temporal has under this id, and how many add_evidence signals the
        latest one received (the signal-with-start's own included)."""
        runs = [w async for w in self.client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        history = await self.client.get_workflow_handle(workflow_id).fetch_history()
        signals = [
            e
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        ]
        return len(runs), len(signals)


@pytest.fixture
async def rig(settings: Settings, client: Client, pool: asyncpg.Pool) -> AsyncIterator[Rig]:
    p = plant(2)
    # Nobody polls this queue: the workflows stay open, started and signalled only.
    s = settings.model_copy(update={"task_queue": f"outbox-{uuid.uuid4().hex[:8]}"})
    sims = [SimulatedModbusPlc(plc, seed=7 + i, tick_s=0.025) for i, plc in enumerate(p.plcs)]
    async with AsyncExitStack() as stack:
        for sim in sims:
            await sim.start()
            stack.push_async_callback(sim.stop)
        proxy = SwitchableProxy(int(settings.temporal_address.rsplit(":", 1)[1]))
        await proxy.start()
        stack.push_async_callback(proxy.close)
        via_proxy = await connect(s, address=f"127.0.0.1:{proxy.port}")
        r = Rig(s, p, sims, proxy, via_proxy, client, pool)
        yield r
        for workflow_id in r.workflow_ids:
            try:
                await client.get_workflow_handle(workflow_id).terminate("test over")
            except Exception:
                pass  # never started, or already closed


def inject_faults(rig: Rig, metrics: tuple[str, ...]) -> None:
    for sim in rig.sims:
        for metric in metrics:
            sim.inject(metric, FaultKind.STEP, 6.0)


def bearer(settings: Settings) -> str:
    token = settings.api_token
    return token.get_secret_value() if isinstance(token, SecretStr) else str(token)


async def writer_row(rig: Rig) -> dict[str, Any]:
    app = create_app(rig.settings, rig.client, rig.pool)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as http:
        response = await http.get(
            "/collectors", headers={"Authorization": f"Bearer {bearer(rig.settings)}"}
        )
    assert response.status_code == 200
    # An ingest of one site names its row host/site.
    host = f"{socket.gethostname()}/{rig.plant.sites[0].name}"
    (row,) = [w for w in response.json()["writers"] if w["host"] == host]
    return dict(row)


async def test_alarms_raised_while_temporal_is_down_each_reach_one_workflow_after_it_returns(
    rig: Rig,
) -> None:
    ingest = rig.ingest(rig.via_proxy)
    await ingest.start()
    try:
        await until("samples from every PLC", lambda: all(c.cycles >= 5 for c in ingest.collectors))
        rig.proxy.cut()
        cut_at = time.monotonic()
        inject_faults(rig, METRICS)  # 2 PLCs x 3 metrics: six alarms
        rows = await until(
            "six alarms in the outbox, each tried and failed",
            lambda: _rows_if(rig, lambda rs: len(rs) == 6 and all(r["last_error"] for r in rs)),
            timeout_s=40,
        )
        assert all(r["delivered_at"] is None for r in rows)
        assert not ingest.starter.started  # nothing reached Temporal
        # Operators see the backlog and the failed attempts behind GET /collectors.
        counters = await until(
            "the counters written with six pending",
            lambda: _if(writer_row(rig), lambda w: w["alarms_pending"] == 6),
        )
        assert counters["alarms_delivered"] == 0 and counters["alarms_failed"] >= 6
        await until("ten seconds of outage", lambda: time.monotonic() - cut_at >= 10)

        rig.proxy.up = True
        back_at = datetime.now(UTC)
        rows = await until(
            "every alarm delivered",
            lambda: _rows_if(rig, lambda rs: all(r["delivered_at"] for r in rs)),
            timeout_s=30,
        )
        delays = sorted((r["delivered_at"] - back_at).total_seconds() for r in rows)
        print(
            f"\noutage {back_at:%T} after {time.monotonic() - cut_at:.1f} s; delivery s: {delays}"
        )
        for workflow_id in rig.workflow_ids:
            assert await rig.runs_and_signals(workflow_id) == (1, 1), workflow_id
        assert sorted(s.workflow_id for s in ingest.starter.started) == sorted(rig.workflow_ids)
        counters = await until(
            "the counters written with none pending",
            lambda: _if(writer_row(rig), lambda w: w["alarms_pending"] == 0),
        )
        assert counters["alarms_delivered"] == 6
    finally:
        await ingest.stop()


async def test_a_restarted_ingest_delivers_the_alarms_its_predecessor_left_pending(
    rig: Rig,
) -> None:
    first = rig.ingest(rig.via_proxy)
    await first.start()
    try:
        await until("samples from every PLC", lambda: all(c.cycles >= 5 for c in first.collectors))
        rig.proxy.cut()
        inject_faults(rig, ("level",))
        await until(
            "two alarms tried and pending",
            lambda: _rows_if(rig, lambda rs: len(rs) == 2 and all(r["last_error"] for r in rs)),
        )
        # The fault is over before the restart: the next ingest's detector raises no alarm of
        # its own, so whatever it delivers is what it inherited.
        for sim in rig.sims:
            sim.clear()
    finally:
        await first.stop()  # with Temporal still unreachable: the rows stay pending
    assert all(r["delivered_at"] is None for r in await rig.rows())

    second = rig.ingest(rig.client)  # a new process, Temporal reachable
    await second.start()
    try:
        await until(
            "the inherited alarms delivered",
            lambda: _rows_if(rig, lambda rs: all(r["delivered_at"] for r in rs)),
        )
        for plc in rig.plant.plcs:
            assert await rig.runs_and_signals(drift_workflow_id(plc.site, plc.id, "level")) == (
                1,
                1,
            )
        assert len(await rig.rows()) == 2 and second.detector.alarms_raised == 0
        assert second.outbox.delivered == 2 and first.outbox.delivered == 0
    finally:
        await second.stop()


async def test_an_alarm_whose_workflow_was_started_before_the_crash_is_not_sent_again(
    rig: Rig,
) -> None:
    # The previous process recorded its attempt, started the workflow, and died before it
    # could mark the row delivered.
    plc = rig.plant.plcs[0]
    alert = make_alert(5.0, "level", plc.id, site=plc.site)
    key = alarm_key(alert)
    ingest = rig.ingest(rig.client)
    await ingest.starter.deliver(alert, alarm_key=key)
    await rig.pool.execute(
        """INSERT INTO alarm_outbox (workflow_id, detected_at, alert, attempts)
           VALUES ($1, $2, $3::jsonb, 1)""",
        alert.workflow_id,
        alert.detected_at,
        alert.model_dump_json(),
    )
    outbox = AlarmOutbox(rig.settings.pg_dsn, ingest.starter, config=FAST)
    outbox.start()
    try:
        # The row is stamped before the outbox counts it: a stop between the two (the row
        # committed, its reply still on the way) would be a call cut short, counted by nobody.
        (row,) = await until(
            "the row marked delivered and counted",
            lambda: _rows_if(
                rig, lambda rs: len(rs) == 1 and rs[0]["delivered_at"] and outbox.delivered
            ),
        )
    finally:
        await outbox.stop()
    assert await rig.runs_and_signals(alert.workflow_id) == (1, 1)  # no second signal
    assert len(ingest.starter.started) == 1 and outbox.delivered == 1
    run_id = (await rig.client.get_workflow_handle(alert.workflow_id).describe()).run_id
    assert row["run_id"] == run_id


async def _rows_if(
    rig: Rig, ok: Callable[[list[asyncpg.Record]], object]
) -> list[asyncpg.Record] | None:
    rows = await rig.rows()
    return rows if ok(rows) else None


async def _if(
    value: Awaitable[dict[str, Any]], ok: Callable[[dict[str, Any]], object]
) -> dict[str, Any] | None:
    got = await value
    return got if ok(got) else None
