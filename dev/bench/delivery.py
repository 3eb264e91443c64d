"""delivery_failover: an approval request Twilio reports undelivered → the next person of the
on-call chain asked, on the real stack (Temporal, PostgreSQL, the API receiving the local
Twilio's signed status callbacks), at the roster's default step of 300 s.

Without status callbacks the next person is asked when the step's timer fires (300 s); the
figure is how much sooner that happens. Anchor: the same request handed to Twilio directly
(one Messages API call through the same local Twilio), measured in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from app.stack import Stack
from dev.bench.drift import _alert, temporal_client
from dev.bench.report import p99_line
from dev.fakes.server import LocalServer, free_port
from dev.fakes.twilio import FakeTwilio, SentMessage, post_inbound
from factorylm.plant import load_plant
from factorylm.settings import Settings
from factorylm.waiting import wait_for
from factorylm.whatsapp import WhatsAppSender
from workflows.drift_response import DriftResponseWorkflow

FIRST, NEXT = "whatsapp:+15550700001", "whatsapp:+15550700002"
STEP_S = 300.0  # the roster's default step (FACTORYLM_APPROVAL_TIMEOUT_S)


def _roster(path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "people": [
                    {"id": "first", "whatsapp": FIRST.removeprefix("whatsapp:")},
                    {"id": "next", "whatsapp": NEXT.removeprefix("whatsapp:")},
                ],
                "outside_shifts": {"on_duty": "first", "backup": "next"},
            }
        )
    )
    return path


def _request(twilio: FakeTwilio, who: str, workflow_id: str) -> SentMessage | None:
    return next((m for m in twilio.to(who) if workflow_id in m.body and "YES" in m.body), None)


def _undelivered_at(twilio: FakeTwilio, sid: str) -> float | None:
    return next(
        (
            c.at
            for c in twilio.callbacks
            if c.form["MessageSid"] == sid and c.form["MessageStatus"] == "undelivered"
        ),
        None,
    )


async def delivery_failover(settings: Settings, rounds: int = 15) -> dict[str, Any]:
    twilio = FakeTwilio()
    server = LocalServer(twilio.app())
    await server.start()
    work = Path(tempfile.mkdtemp(prefix="factorylm-bench-"))
    port = free_port()
    queue = f"bench-delivery-{uuid.uuid4().hex[:6]}"
    s = settings.model_copy(
        update={
            "task_queue": queue,
            "plc_task_queue": f"{queue}-edge",
            "approvers": [],
            "roster_file": _roster(work / "roster.yaml"),
            "approval_timeout_s": STEP_S,
            "api_port": port,
            "public_url": f"http://127.0.0.1:{port}",
            "twilio_account_sid": twilio.account_sid,
            "twilio_auth_token": SecretStr(twilio.auth_token),
            "twilio_api_base_url": server.url,
        }
    )
    twilio.undeliverable[FIRST] = 63024  # the on-duty phone is off
    after_callback: list[float] = []
    after_first_request: list[float] = []
    direct: list[float] = []
    asked_next = 0
    sender = WhatsAppSender(s)
    try:
        async with temporal_client(s) as client:
            stack = Stack(s, load_plant(s.plant_file), client, run_ingest=False)
            with contextlib.redirect_stdout(sys.stderr):
                await stack.start()
            try:
                for _ in range(rounds):
                    alert = _alert("conveyor-1", "vibration", 5.0)  # shutdown_motor: approval
                    handle = await client.start_workflow(
                        DriftResponseWorkflow.run,
                        alert,
                        id=f"{alert.workflow_id}-bench-{uuid.uuid4().hex[:6]}",
                        task_queue=queue,
                    )
                    first = await wait_for(
                        "the first request", partial(_request, twilio, FIRST, handle.id)
                    )
                    nxt = await wait_for(
                        "the next person's request", partial(_request, twilio, NEXT, handle.id)
                    )
                    failed_at = await wait_for(
                        "the undelivered callback", partial(_undelivered_at, twilio, first.sid)
                    )
                    asked_next += 1
                    after_callback.append((nxt.created.timestamp() - failed_at) * 1000)
                    after_first_request.append(
                        (nxt.created.timestamp() - first.created.timestamp()) * 1000
                    )
                    code = nxt.body.split("Reply YES ")[1][:4]
                    answer = await post_inbound(
                        s.api_url, s.public_url, twilio.auth_token, NEXT, f"NO {code}"
                    )
                    answer.raise_for_status()
                    await handle.result()
                    t0 = time.perf_counter()
                    await asyncio.to_thread(sender.send_text, NEXT, nxt.body)
                    direct.append((time.perf_counter() - t0) * 1000)
            finally:
                with contextlib.redirect_stdout(sys.stderr):
                    await stack.stop()
    finally:
        await server.stop()
    line = p99_line(
        "delivery_failover",
        after_callback,
        direct,
        "p99 of one request handed to the local Twilio directly (Messages API call)",
        rounds=rounds,
        asked_next=asked_next,
        first_request_to_next_p50_ms=round(statistics.median(after_first_request), 1),
        first_request_to_next_max_ms=round(max(after_first_request), 1),
        timer_s=STEP_S,
    )
    return line
