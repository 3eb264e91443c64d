"""`factorylm demo --scenario health`: one simulated PLC goes silent; the health monitor opens
an incident, sends one WhatsApp alert and has the ingest restart that collector; the PLC comes
back and the incident closes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from dev.demo.environment import Demo
from factorylm.models.health import HealthMonitorInput, HealthRunResult
from factorylm.waiting import wait_for
from temporal.schedules import BASELINE_SCHEDULE_ID, DAILY_SUMMARY_SCHEDULE_ID
from workflows.health import HealthMonitorWorkflow

# A Modbus TCP PLC: its client gives up after 1 s, so three failed polls take seconds.
SILENT_PLC = "conveyor-1"


async def _monitor(demo: Demo) -> HealthRunResult:
    assert demo.client is not None and demo.plant is not None
    s, plant = demo.settings, demo.plant
    # The Schedule runs it every 5 minutes; the scenario runs it now rather than wait.
    return await demo.client.execute_workflow(
        HealthMonitorWorkflow.run,
        HealthMonitorInput(
            task_queues=[s.task_queue, *(s.edge_queue(x) for x in plant.site_names)],
            schedule_ids=[BASELINE_SCHEDULE_ID, DAILY_SUMMARY_SCHEDULE_ID],
            recipients=list(s.approvers),
        ),
        id=f"health-monitor-demo-{uuid.uuid4().hex[:6]}",
        task_queue=s.task_queue,
    )


async def run_health_scenario(demo: Demo, say: Callable[[str], None]) -> dict[str, Any]:
    assert demo.stack is not None and demo.stack.ingest is not None and demo.stack.pool is not None
    pool, manager = demo.stack.pool, demo.stack.ingest.manager
    t0 = time.monotonic()
    plc_id = SILENT_PLC if SILENT_PLC in demo.sims else next(iter(demo.sims))

    async def state() -> str | None:
        return await pool.fetchval("SELECT state FROM collector_status WHERE plc_id = $1", plc_id)  # type: ignore[no-any-return]

    await wait_for(
        f"{plc_id}'s collector to report ok", lambda: _equals(state(), "ok"), timeout_s=30
    )
    first = await _monitor(demo)
    say(f"health check: {first.checks} checks, {'all ok' if first.ok else first.failures}")
    restarts_before = manager.restarts[plc_id]
    await demo.sims[plc_id].set_offline(True)
    say(f"{plc_id} stops answering (simulated power loss)")
    await wait_for(
        f"{plc_id}'s collector to fail", lambda: _equals(state(), "failing"), timeout_s=30
    )
    sick = await _monitor(demo)
    say(
        f"health check: failing {sick.failures}; alerts sent {sick.alerts_sent}; restart asked for {sick.restarted}"
    )
    if demo.twilio is not None:
        alert = next((m for m in reversed(demo.twilio.sent) if "FactoryLM health" in m.body), None)
        if alert is not None:
            say(f"WhatsApp to {alert.to}:\n    " + alert.body.replace("\n", "\n    "))
    await wait_for(
        "the collector restart", lambda: manager.restarts[plc_id] > restarts_before, timeout_s=15
    )
    say(f"the ingest restarted {plc_id}'s collector")
    again = await _monitor(demo)
    say(f"health check again: alerts sent {again.alerts_sent} (the incident is already open)")
    await demo.sims[plc_id].set_offline(False)
    await wait_for(f"{plc_id} to answer again", lambda: _equals(state(), "ok"), timeout_s=60)
    healed = await _monitor(demo)
    say(f"{plc_id} answers again; health check {'all ok' if healed.ok else healed.failures}")
    restarted = manager.restarts[plc_id] > restarts_before
    ok = sick.alerts_sent == 1 and again.alerts_sent == 0 and restarted and healed.ok
    return {
        "status": "completed" if ok else "failed",
        "alerts_sent": sick.alerts_sent + again.alerts_sent,
        "collector_restarted": restarted,
        "trace_id": sick.trace_id,
        "plc_id": plc_id,
        "seconds": round(time.monotonic() - t0, 2),
    }


async def _equals(value: Any, expected: str) -> bool:
    return bool(await value == expected)
