"""`make demo` / `factorylm demo`: the whole product on its embedded default, with a scenario.

Starts PostgreSQL, the Temporal dev server, the simulated plant (S7, EtherNet/IP, Modbus TCP and RTU peers), the workers, the
ingest and the API; injects a vibration fault; plays the approver through the API; and reports
what happened. `--once` tears everything down and prints one JSON line last.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from pydantic import SecretStr
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError

from factorylm.fakes.server import LocalServer
from factorylm.fakes.twilio import FakeTwilio, post_inbound
from factorylm.models import DriftResponseResult, drift_workflow_id
from factorylm.pgcluster import Cluster
from factorylm.plant import Plant, load_plant
from factorylm.settings import PROJECT_ROOT, Settings
from factorylm.simulator.peer import SimulatedPeer
from factorylm.simulator.plant import PlantSimulator
from factorylm.simulator.signals import FaultKind
from factorylm.stack import Stack
from factorylm.temporal_client import connect
from factorylm.waiting import wait_for
from factorylm.whatsapp import WhatsAppSender
from temporal.devserver import DevServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scenario:
    plc_id: str = "conveyor-1"
    metric: str = "vibration"
    step_sigma: float = 6.0


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Demo:
    settings: Settings
    scenario: Scenario = field(default_factory=Scenario)
    plant: Plant | None = None
    cluster_started: bool = False
    temporal_started: bool = False
    sims: dict[str, SimulatedPeer] = field(default_factory=dict)
    simulator: PlantSimulator | None = None
    # `factorylm simulate inject` reaches the demo's simulator here; None: no control channel.
    control_port: int | None = None
    stack: Stack | None = None
    client: Client | None = None
    # Without Twilio credentials the demo talks to a local Twilio that speaks its REST API.
    twilio: FakeTwilio | None = None
    twilio_server: LocalServer | None = None

    async def up(self) -> None:
        settings = self.settings
        self.plant = load_plant(settings.plant_file)
        say(f"plant {self.plant.name}: {len(self.plant.plcs)} PLC(s) from {settings.plant_file}")
        cluster = Cluster.from_settings(settings)
        self.cluster_started = await asyncio.to_thread(cluster.start)
        say(f"PostgreSQL (TimescaleDB + pgvector) on {settings.pg_host}:{settings.pg_port}")
        server = DevServer(settings)
        self.temporal_started = await asyncio.to_thread(server.start)
        say(
            f"Temporal server on {settings.temporal_address}, namespace {settings.temporal_namespace}"
        )
        self.simulator = PlantSimulator(self.plant, seed=7, control_port=self.control_port)
        await self.simulator.start()
        self.sims = self.simulator.peers
        for peer in self.sims.values():
            say(f"simulated {peer.protocol_label} PLC {peer.plc.id} on {peer.address}")
        if self.simulator.control is not None:
            say(f"fault control: factorylm simulate inject --control-port {self.control_port} ...")
        if not WhatsAppSender.configured(settings):
            self.twilio = FakeTwilio()
            self.twilio_server = LocalServer(self.twilio.app())
            await self.twilio_server.start()
            settings = self.settings = settings.model_copy(
                update={
                    "twilio_account_sid": self.twilio.account_sid,
                    "twilio_auth_token": SecretStr(self.twilio.auth_token),
                    "twilio_api_base_url": self.twilio_server.url,
                    "public_url": settings.api_url,
                }
            )
            say(
                f"WhatsApp through a local Twilio API on {self.twilio_server.url} (no credentials set)"
            )
        self.client = await connect(settings)
        self.stack = Stack(settings, self.plant, self.client)
        await self.stack.start()
        await self._sample_manuals()
        say(f"workers on task queues {settings.task_queue} and {settings.plc_task_queue}")
        say(
            f"ingest polling {len(self.plant.plcs)} PLC(s); drift window "
            f"{settings.drift_window_s:g} s, on-delay {settings.drift_on_delay_s:g} s"
        )
        say(
            f"Temporal Web UI: {settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows"
        )
        say(f"API: {settings.api_url} (try {settings.api_url}/health)")

    async def _sample_manuals(self) -> None:
        """The Manual Hunter needs manuals: the demo plant's are ingested once (and again when
        a file changes), as `factorylm manuals add manuals/*` would."""
        from factorylm.embeddings import get_embedder
        from factorylm.manuals import ManualStore

        assert self.stack is not None and self.stack.pool is not None
        store = ManualStore(
            self.stack.pool, get_embedder(self.settings), ef_search=self.settings.memory_ef_search
        )
        for path in sorted((PROJECT_ROOT / "manuals").glob("*.md")):
            summary = await store.add_if_changed(path)
            if summary is not None:
                say(f"manual {summary.source}: {summary.chunks} excerpts for the Manual Hunter")

    async def down(self) -> None:
        if self.stack is not None:
            await self.stack.stop()
            say("ingest flushed, workers and API stopped")
        if self.simulator is not None:
            await self.simulator.stop()
        if self.twilio_server is not None:
            await self.twilio_server.stop()
        if self.temporal_started:
            await asyncio.to_thread(DevServer(self.settings).stop)
            say("Temporal server stopped")
        if self.cluster_started:
            await asyncio.to_thread(Cluster.from_settings(self.settings).stop)
            say("PostgreSQL stopped")

    async def run_scenario(self) -> dict[str, Any]:
        assert self.client is not None and self.stack is not None
        sc, settings = self.scenario, self.settings
        t0 = time.monotonic()
        conn = await asyncpg.connect(settings.pg_dsn)
        try:
            since = datetime.now(UTC)
            rows = await wait_for(
                f"samples from {sc.plc_id} in the samples hypertable",
                lambda: conn.fetchval(
                    "SELECT count(*) FROM samples WHERE plc_id = $1 AND time >= $2",
                    sc.plc_id,
                    since,
                ),
            )
        finally:
            await conn.close()
        say(f"samples flowing: {rows} rows from {sc.plc_id} written since start")
        injected_at = datetime.now(UTC)
        self.sims[sc.plc_id].inject(sc.metric, FaultKind.STEP, sc.step_sigma)
        say(f"fault injected: {sc.metric} on {sc.plc_id} steps {sc.step_sigma:+g}σ")
        workflow_id = drift_workflow_id(sc.plc_id, sc.metric)
        handle = self.client.get_workflow_handle(workflow_id, result_type=DriftResponseResult)

        async def started() -> bool:
            try:
                desc = await handle.describe()
            except RPCError:
                return False
            return desc.start_time >= injected_at.replace(microsecond=0)

        await wait_for(f"workflow {workflow_id}", started, timeout_s=30)
        say(f"drift detected: workflow {workflow_id} started")
        approver = settings.approvers[0]
        if self.twilio is None:
            say(f"the approval request went to {approver} on WhatsApp: answer it there")
        else:
            twilio = self.twilio
            request = await wait_for(
                f"the WhatsApp request to {approver}",
                lambda: next((m for m in twilio.to(approver) if "Reply YES" in m.body), None),
                timeout_s=30,
            )
            say(f"WhatsApp to {approver}:\n    " + request.body.replace("\n", "\n    "))
            code = re.search(r"YES (\d{4})", request.body)
            assert code is not None
            answer = await post_inbound(
                settings.api_url, settings.public_url, twilio.auth_token, approver, f"YES {code[1]}"
            )
            answer.raise_for_status()
            said = re.search(r"<Message>(.*)</Message>", answer.text, re.S)
            say(
                f"{approver} replies 'YES {code[1]}'; FactoryLM answers: {said[1] if said else answer.text}"
            )
        result = await _result(handle)
        self.sims[sc.plc_id].clear(sc.metric)
        say(
            f"workflow {result.status}: {result.action} wrote {result.value_written}, "
            f"read back {result.value_read_back}; work order {result.work_order_id}"
        )
        return {
            "workflow_id": workflow_id,
            "status": result.status,
            "action": result.action,
            "value_written": result.value_written,
            "value_read_back": result.value_read_back,
            "work_order_id": result.work_order_id,
            "approved_by": result.approved_by,
            "seconds": round(time.monotonic() - t0, 2),
        }


async def _result(handle: WorkflowHandle[Any, Any]) -> DriftResponseResult:
    result: DriftResponseResult = await asyncio.wait_for(handle.result(), timeout=60)
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED
    return result


def demo_settings(settings: Settings) -> Settings:
    """The demo's drift window is short so the scenario answers in seconds, not minutes; the
    on-delay lets the window fill with the fault, so the alarm carries its full magnitude."""
    quick = {"drift_window_s": 1.0, "drift_on_delay_s": 1.0}
    return settings.model_copy(
        update={k: v for k, v in quick.items() if k not in settings.model_fields_set}
    )


async def _run_named(demo: Demo, scenario: str) -> dict[str, Any]:
    """The scenario chosen with --scenario (names in factorylm/cli.py DEMO_SCENARIOS)."""
    if scenario == "photo":
        from factorylm.demo_photo import run_photo_scenario

        return await run_photo_scenario(demo, say)
    if scenario == "monkey":
        from factorylm.demo_monkey import run_monkey_scenario

        return await run_monkey_scenario(demo, say)
    if scenario == "health":
        from factorylm.demo_health import run_health_scenario

        return await run_health_scenario(demo, say)
    return await demo.run_scenario()


async def run(settings: Settings, *, once: bool, scenario: str = "drift") -> int:
    demo = Demo(demo_settings(settings), control_port=15099)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    summary: dict[str, Any] = {"status": "failed"}
    try:
        await demo.up()
        summary = await _run_named(demo, scenario)
        if not once:
            say("the demo stays up: open the Web UI, try the API; Ctrl-C stops everything")
            await stop.wait()
    except Exception as exc:
        log.debug("demo failed", exc_info=True)
        say(f"FAILED: {exc}")
        summary = {"status": "failed", "error": str(exc)}
    finally:
        await demo.down()
    print(json.dumps(summary), flush=True)
    return 0 if summary.get("status") == "completed" else 1


def main(settings: Settings, *, once: bool, scenario: str = "drift") -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return asyncio.run(run(settings, once=once, scenario=scenario))
