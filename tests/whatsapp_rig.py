"""A running stack whose WhatsApp goes through the local Twilio API, with signed inbound
webhooks: shared by tests/integration/test_whatsapp.py and tests/security/."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle

from app.stack import Stack
from dev.fakes.server import LocalServer
from dev.fakes.twilio import FakeTwilio, SentMessage, post_inbound
from dev.simulator.modbus import SimulatedModbusPlc
from factorylm.models.drift import DriftResponseResult
from factorylm.settings import Settings
from helpers import free_port, make_alert, plant_with_free_ports, until
from workflows.drift_response import DriftResponseWorkflow

# Numbers of their own: other test modules leave requests to the default approvers.
ON_DUTY = "whatsapp:+15550200001"
BACKUP = "whatsapp:+15550200002"


@dataclass
class Rig:
    settings: Settings
    stack: Stack
    twilio: FakeTwilio
    sim: SimulatedModbusPlc
    pool: asyncpg.Pool

    async def start(
        self, sigma: float, metric: str = "vibration"
    ) -> WorkflowHandle[Any, DriftResponseResult]:
        a = make_alert(sigma, metric)
        return await self.stack.client.start_workflow(
            DriftResponseWorkflow.run,
            a,
            id=f"{a.workflow_id}-{uuid.uuid4().hex[:6]}",
            task_queue=self.settings.task_queue,
        )

    async def message_to(self, who: str, containing: str, after: int = 0) -> SentMessage:
        def latest() -> SentMessage | None:
            found = [
                m
                for m in self.twilio.to(who)[after:]
                if containing in m.body or containing == m.content_sid
            ]
            return found[-1] if found else None

        message: SentMessage = await until(f"a message to {who} containing {containing!r}", latest)
        return message

    async def reply(self, who: str, text: str, **form: str) -> str:
        response = await post_inbound(
            self.settings.api_url,
            self.settings.public_url,
            self.twilio.auth_token,
            who,
            text,
            **form,
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/xml")
        said = re.search(r"<Message>(.*)</Message>", response.text, re.S)
        assert said is not None
        return html.unescape(said[1])  # the person reads the text, not the XML


@pytest.fixture
async def rig(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> AsyncIterator[Rig]:
    twilio = FakeTwilio()
    server = LocalServer(twilio.app())
    await server.start()
    plant, _ = plant_with_free_ports(tmp_path)
    queue = f"wa-{uuid.uuid4().hex[:8]}"
    port = free_port()
    s = settings.model_copy(
        update={
            "task_queue": queue,
            "plc_task_queue": f"{queue}-edge",
            "approvers": [ON_DUTY, BACKUP],
            "approval_timeout_s": 30.0,
            "api_port": port,
            "public_url": f"http://127.0.0.1:{port}",
            "twilio_account_sid": twilio.account_sid,
            "twilio_auth_token": SecretStr(twilio.auth_token),
            "twilio_api_base_url": server.url,
        }
    )
    sim = SimulatedModbusPlc(plant.plcs[0])
    await sim.start()
    stack = Stack(s, plant, client, run_ingest=False)
    await stack.start()
    yield Rig(s, stack, twilio, sim, pool)
    await stack.stop()
    await sim.stop()
    await server.stop()


def code_in(message: SentMessage) -> str:
    found = re.search(r"YES (\d{4})", message.body)
    assert found is not None, message.body
    return found[1]
