"""Approval benchmarks on the demo stack (embedded parts, local Twilio, offline agents).

approval_to_write_p99_ms: a signed WhatsApp "YES" arriving at the API → the PLC value read
back by the edge worker. fault_to_whatsapp_s: a fault injected in the simulator → the approval
request handed to Twilio.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np

from dev.bench.report import p99_line
from dev.demo.environment import Demo, demo_settings
from dev.fakes.twilio import FakeTwilio, SentMessage, post_inbound
from dev.simulator.signals import FaultKind
from factorylm.drivers import driver_for
from factorylm.models.drift import DriftAlert, DriftResponseResult, drift_workflow_id
from factorylm.settings import Settings
from factorylm.waiting import wait_for
from workflows.drift_response import DriftResponseWorkflow


@contextlib.asynccontextmanager
async def demo_stack(settings: Settings) -> AsyncIterator[Demo]:
    demo = Demo(demo_settings(settings))
    with contextlib.redirect_stdout(sys.stderr):  # progress to stderr: stdout is JSON lines
        await demo.up()
    try:
        yield demo
    finally:
        with contextlib.redirect_stdout(sys.stderr):
            await demo.down()


def _request_to(twilio: FakeTwilio, who: str, after: int, marker: str) -> SentMessage | None:
    return next(
        (m for m in twilio.to(who)[after:] if marker in m.body and "Reply YES" in m.body), None
    )


def _code(message: SentMessage) -> str:
    found = re.search(r"YES (\d{4})", message.body)
    assert found is not None
    return found[1]


async def approval_to_write_p99_ms(settings: Settings, rounds: int = 40) -> dict[str, Any]:
    latencies: list[float] = []
    floor: list[float] = []
    async with demo_stack(settings) as demo:
        assert demo.client is not None and demo.twilio is not None and demo.plant is not None
        s, twilio, approver = demo.settings, demo.twilio, demo.settings.approvers[0]
        plc = demo.plant.plcs[0]
        setpoint = plc.setpoint("motor_run")
        assert setpoint is not None
        driver = driver_for(plc)
        for i in range(rounds):
            await driver.write_point(setpoint, 1)  # motor running again before each round
            now = datetime.now(UTC)
            alert = DriftAlert(
                plc_id=plc.id,
                vendor=plc.vendor,
                metric="vibration",
                sigma=6.0,
                window_mean=3.9,
                window_count=4,
                window_seconds=1,
                baseline_mean=2.1,
                baseline_std=0.3,
                sample_time=now,
                detected_at=now,
            )
            wf_id = f"{drift_workflow_id(plc.id, 'vibration')}-bench-{uuid.uuid4().hex[:6]}"
            seen = len(twilio.to(approver))
            handle = await demo.client.start_workflow(
                DriftResponseWorkflow.run,
                alert,
                id=wf_id,
                task_queue=s.task_queue,
            )
            request = await wait_for(
                "the WhatsApp request",
                partial(_request_to, twilio, approver, seen, wf_id),
            )
            t0 = time.time()
            answer = await post_inbound(
                s.api_url, s.public_url, twilio.auth_token, approver, f"YES {_code(request)}"
            )
            answer.raise_for_status()
            result = await handle.result()
            assert result.status == "completed", result
            assert demo.stack is not None and demo.stack.pool is not None
            done = await demo.stack.pool.fetchval(
                "SELECT completed_at FROM plc_writes WHERE workflow_id = $1", wf_id
            )
            latencies.append((done.timestamp() - t0) * 1000)
            # The floor: the same write and read-back, straight through the driver.
            f0 = time.perf_counter()
            await driver.write_point(setpoint, i % 2)
            await driver.read_points([setpoint])
            floor.append((time.perf_counter() - f0) * 1000)
        await driver.close()
    return p99_line(
        "approval_to_write_p99_ms",
        latencies,
        floor,
        "p99 of the same Modbus write + read-back straight through the driver",
        rounds=rounds,
    )


async def fault_to_whatsapp_s(settings: Settings, rounds: int = 5) -> dict[str, Any]:
    to_request: list[float] = []
    to_start: list[float] = []
    async with demo_stack(settings) as demo:
        assert demo.client is not None and demo.twilio is not None and demo.stack is not None
        s, twilio, approver = demo.settings, demo.twilio, demo.settings.approvers[0]
        sc = demo.scenario
        ingest = demo.stack.ingest
        assert ingest is not None
        sim = demo.sims[sc.plc_id]
        for _ in range(rounds):
            seen = len(twilio.to(approver))
            starts = len(ingest.starter.started)
            t0 = time.time()
            sim.inject(sc.metric, FaultKind.STEP, sc.step_sigma)
            request = await wait_for(
                "the WhatsApp request",
                partial(_request_to, twilio, approver, seen, f"{sc.metric} on {sc.plc_id}"),
                interval_s=0.01,
            )
            to_request.append(request.created.timestamp() - t0)
            started = ingest.starter.started[starts]
            handle = demo.client.get_workflow_handle(
                started.workflow_id, result_type=DriftResponseResult
            )
            to_start.append((await handle.describe()).start_time.timestamp() - t0)
            answer = await post_inbound(
                s.api_url, s.public_url, twilio.auth_token, approver, f"NO {_code(request)}"
            )
            answer.raise_for_status()
            await handle.result()
            sim.clear(sc.metric)
            await wait_for(
                "the alarm to clear", lambda: not ingest.detector.alarmed(sc.plc_id, sc.metric)
            )
    value = max(to_request)
    anchor = max(to_start)
    return {
        "bench": "fault_to_whatsapp_s",
        "value": round(value, 2),
        "unit": "s (worst of rounds)",
        "anchor": round(anchor, 2),
        "ratio": round(value / anchor, 2),
        "rounds": rounds,
        "mean_s": round(float(np.mean(to_request)), 2),
        "anchor_is": "fault injected → workflow started (the detection part alone)",
    }
