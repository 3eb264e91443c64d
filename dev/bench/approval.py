"""Approval benchmarks on the demo stack (embedded parts, local Twilio, offline agents).

approval_to_write_p99_ms: a signed WhatsApp "YES" arriving at the API → the PLC value read
back by the edge worker. fault_to_whatsapp_s: a fault injected in the simulator → the approval
request handed to Twilio, at the drift settings a plant gets by default (and, as a line of its
own, with the demo's 1 s window).
"""

from __future__ import annotations

import asyncio
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
    async with demo_stack_with(demo_settings(settings)) as demo:
        yield demo


@contextlib.asynccontextmanager
async def demo_stack_with(settings: Settings) -> AsyncIterator[Demo]:
    """The demo stack with exactly these settings (demo_settings already applied)."""
    demo = Demo(settings)
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
            wf_id = (
                f"{drift_workflow_id(plc.site, plc.id, 'vibration')}-bench-{uuid.uuid4().hex[:6]}"
            )
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


def production_drift(settings: Settings) -> Settings:
    """The demo stack with the drift settings a plant gets by default (the Settings model's
    defaults, not the demo's 1 s window): the plant file's detectors at their shipped values."""
    fields = Settings.model_fields
    return settings.model_copy(
        update={
            name: fields[name].default
            for name in ("drift_window_s", "drift_threshold_sigma", "drift_clear_sigma",
                         "drift_on_delay_s", "drift_forecast_horizon_s")
        }
    )  # fmt: skip


async def _faults_to_whatsapp(
    settings: Settings, rounds: int, production: bool
) -> tuple[list[float], list[float]]:
    to_request: list[float] = []
    to_start: list[float] = []
    # Twenty faults in minutes are a flood by the alarm journal's rule (ingest/alarms.py):
    # past ten it would group the requests into one notice. This measures one fault's way.
    s = demo_settings(settings).model_copy(update={"alarm_flood_alarms": 0})
    async with demo_stack_with(production_drift(s) if production else s) as demo:
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
            faulty_s = time.time() - t0
            await wait_for(
                "the alarm to clear", lambda: not ingest.detector.alarmed(sc.plc_id, sc.metric)
            )
            if production:
                # The 300 s window still holds this fault's samples: with faults back to back
                # its mean would climb to an alarm of its own. A quarter of the time faulty
                # keeps it under 2σ even for an 8σ step.
                await asyncio.sleep(3 * faulty_s)
    return to_request, to_start


async def fault_to_whatsapp_s(
    settings: Settings, rounds: int = 20, demo_rounds: int = 5
) -> list[dict[str, Any]]:
    """A step fault injected in the simulator → the approval request handed to Twilio, p50/p95
    over `rounds` faults at the production drift settings; then the demo's 1 s window as a
    line of its own. Anchor: fault → workflow started (the detection part alone)."""
    lines = []
    for name, production, n in (
        ("fault_to_whatsapp_s", True, rounds),
        ("fault_to_whatsapp_s_demo_window", False, demo_rounds),
    ):
        to_request, to_start = await _faults_to_whatsapp(settings, n, production)
        s = demo_settings(settings)
        window_s = (production_drift(s) if production else s).drift_window_s
        value = float(np.percentile(to_request, 95))
        anchor = float(np.percentile(to_start, 95))
        lines.append(
            {
                "bench": name,
                "value": round(value, 2),
                "unit": "s (p95)",
                "anchor": round(anchor, 2),
                "ratio": round(value / anchor, 2),
                "rounds": n,
                "p50_s": round(float(np.percentile(to_request, 50)), 2),
                "max_s": round(max(to_request), 2),
                "anchor_p50_s": round(float(np.percentile(to_start, 50)), 2),
                "drift_window_s": window_s,
                "flood_grouping": "off",
                "anchor_is": "fault injected → workflow started (the detection part alone)",
            }
        )
    return lines
