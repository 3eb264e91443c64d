"""`factorylm demo --scenario drift` (the default): conveyor-1's vibration steps 6σ; the drift
workflow asks the approver on WhatsApp, the demo answers YES through the API, the approved
write is verified by read-back and a work order is opened."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError

from dev.demo.environment import Demo
from dev.fakes.twilio import post_inbound
from dev.simulator.signals import FaultKind
from factorylm.models.drift import DriftResponseResult, drift_workflow_id
from factorylm.waiting import wait_for


async def run_drift_scenario(demo: Demo, say: Callable[[str], None]) -> dict[str, Any]:
    assert demo.client is not None and demo.stack is not None
    sc, settings = demo.scenario, demo.settings
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
    demo.sims[sc.plc_id].inject(sc.metric, FaultKind.STEP, sc.step_sigma)
    say(f"fault injected: {sc.metric} on {sc.plc_id} steps {sc.step_sigma:+g}σ")
    workflow_id = drift_workflow_id(demo.site_of(sc.plc_id), sc.plc_id, sc.metric)
    handle = demo.client.get_workflow_handle(workflow_id, result_type=DriftResponseResult)

    async def started() -> bool:
        try:
            desc = await handle.describe()
        except RPCError:
            return False
        return desc.start_time >= injected_at.replace(microsecond=0)

    await wait_for(f"workflow {workflow_id}", started, timeout_s=30)
    say(f"drift detected: workflow {workflow_id} started")
    approver = settings.approvers[0]
    if demo.twilio is None:
        say(f"the approval request went to {approver} on WhatsApp: answer it there")
    else:
        twilio = demo.twilio
        try:
            request = await wait_for(
                f"the WhatsApp request to {approver}",
                lambda: next((m for m in twilio.to(approver) if "Reply YES" in m.body), None),
                timeout_s=30,
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; {await _where_it_waits(handle)}") from None
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
    demo.sims[sc.plc_id].clear(sc.metric)
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


async def _where_it_waits(handle: WorkflowHandle[Any, Any]) -> str:
    """What a stuck workflow is doing, for the error: a completed one's outcome, else its
    status and each activity it waits for (attempt, state, last failure), as the Web UI shows."""
    try:
        desc = await handle.describe()
    except RPCError as exc:
        return f"the workflow cannot be described: {exc}"
    if desc.status == WorkflowExecutionStatus.COMPLETED:
        # It ended without asking: its result says what it decided instead.
        done: DriftResponseResult = await handle.result()
        return (
            f"the workflow completed without asking: {done.status}, action {done.action} "
            f"({done.policy}), work order {done.work_order_id}"
        )
    pending = []
    for a in desc.raw_description.pending_activities:
        state = PendingActivityState.Name(a.state).removeprefix("PENDING_ACTIVITY_STATE_")
        failure = (
            f", last failure: {a.last_failure.message[:200]}" if a.HasField("last_failure") else ""
        )
        pending.append(f"{a.activity_type.name} (attempt {a.attempt}, {state.lower()}{failure})")
    status = desc.status.name if desc.status is not None else "unknown"
    return f"the workflow is {status}, waiting for {'; '.join(pending) or 'no activity'}"


async def _result(handle: WorkflowHandle[Any, Any]) -> DriftResponseResult:
    result: DriftResponseResult = await asyncio.wait_for(handle.result(), timeout=60)
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED
    return result
