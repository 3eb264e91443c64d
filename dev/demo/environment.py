"""The demo's environment: the whole product on its embedded default, up and down.

Starts PostgreSQL, the Temporal dev server, the simulated plant (S7, EtherNet/IP, Modbus TCP and RTU peers), the workers, the
ingest and the API; injects a vibration fault; plays the approver through the API; and reports
what happened. `--once` tears everything down and prints one JSON line last.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field

from pydantic import SecretStr
from temporalio.client import Client

from app.pgcluster import Cluster
from app.stack import Stack
from dev.fakes.server import LocalServer
from dev.fakes.twilio import FakeTwilio
from dev.simulator.peer import SimulatedPeer
from dev.simulator.plant import PlantSimulator
from factorylm.plant import Plant, load_plant
from factorylm.settings import PROJECT_ROOT, Settings, reveal
from factorylm.temporal_client import connect
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

    def site_of(self, plc_id: str) -> str:
        """The site a demo PLC is at (its workflow ids carry it)."""
        plc = self.plant.plc(plc_id) if self.plant is not None else None
        if plc is None:
            raise KeyError(f"no PLC {plc_id!r} in the demo plant")
        return plc.site

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
            + ("" if self.temporal_started else " (already running)")
        )
        self.simulator = PlantSimulator(self.plant, seed=7, control_port=self.control_port)
        await self.simulator.start()
        self.sims = self.simulator.peers
        for broker in self.simulator.brokers:
            say(f"MQTT broker (Mosquitto) on {broker.host}:{broker.port}")
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
        edge_queues = ", ".join(settings.edge_queue(s) for s in self.plant.site_names)
        say(f"workers on task queues {settings.task_queue} and {edge_queues}")
        if self.stack.publisher is not None:
            pub = self.stack.publisher
            say(
                f"FactoryLM's events on mqtt://{pub.config.host}:{pub.config.port} under "
                f"{pub.namespace}/factorylm/# ({pub.config.format}): drift alarms, approvals, "
                "PLC writes, work orders"
            )
        say(
            f"ingest polling {len(self.plant.plcs)} PLC(s); drift window "
            f"{settings.drift_window_s:g} s, on-delay {settings.drift_on_delay_s:g} s"
        )
        say(
            f"Temporal Web UI: {settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows"
        )
        say(f"plant board: {settings.api_url}/ (sign in with the token below)")
        say(f"API: {settings.api_url} (try {settings.api_url}/health)")
        say(
            "API admin token for this run: "
            f"{reveal(settings.api_token)} (per-client tokens: factorylm tokens add)"
        )

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
        # Servers that were running before the demo belong to whoever started them (another
        # demo, `factorylm temporal start`, a test run): they stay up, and the demo says so.
        if self.temporal_started:
            await asyncio.to_thread(DevServer(self.settings).stop)
            say("Temporal server stopped")
        else:
            say(
                f"Temporal server on {self.settings.temporal_address} was running before the "
                "demo and stays up (stop it with `factorylm temporal stop`)"
            )
        if self.cluster_started:
            await asyncio.to_thread(Cluster.from_settings(self.settings).stop)
            say("PostgreSQL stopped")
        else:
            say(
                f"PostgreSQL on {self.settings.pg_host}:{self.settings.pg_port} was running "
                "before the demo and stays up (stop it with `factorylm db stop`)"
            )


def demo_settings(settings: Settings) -> Settings:
    """The demo's drift window is short so the scenario answers in seconds, not minutes; the
    on-delay lets the window fill with the fault, so the alarm carries its full magnitude."""
    quick: dict[str, object] = {
        "drift_window_s": 1.0,
        "drift_on_delay_s": 1.0,
        # A fictional number (555-01xx) plays the on-duty approver; the demo answers for it.
        "approvers": ["whatsapp:+15550100001"],
        # The API listens on loopback; this run's admin token is printed at start.
        "api_token": SecretStr(secrets.token_urlsafe(24)),
    }
    return settings.model_copy(
        update={k: v for k, v in quick.items() if k not in settings.model_fields_set}
    )
