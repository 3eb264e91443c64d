"""One trace from the drift alarm in the ingest, through the workflow start, to every
activity — collected by an in-memory exporter from the real Temporal server and workers."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from app.stack import Stack
from dev.simulator.modbus import SimulatedModbusPlc
from factorylm import tracing
from factorylm.models.drift import DriftResponseResult
from factorylm.settings import Settings
from helpers import make_alert, plant_with_free_ports
from ingest.alerts import WorkflowStarter


async def test_spans_from_alarm_to_activities_form_one_trace(
    tmp_path: Path, settings: Settings, pool: asyncpg.Pool
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("factorylm-test")
    client = await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        interceptors=[tracing.interceptor(tracer)],
    )
    plant, _ = plant_with_free_ports(tmp_path)
    queue = f"trace-{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(update={"task_queue": queue, "plc_task_queue": f"{queue}-edge"})
    sim = SimulatedModbusPlc(plant.plcs[0])
    await sim.start()
    stack = Stack(s, plant, client, run_ingest=False, run_api=False)
    await stack.start()
    try:
        starter = WorkflowStarter(client, queue, tracer=tracer)
        alert = make_alert(2.5, metric="motor_temp", plc="conveyor-1")
        await starter.start(alert)
        (started,) = starter.started
        trace_id = started.alert.trace_context["trace_id"]
        handle = client.get_workflow_handle(started.workflow_id, result_type=DriftResponseResult)
        result = await handle.result()
    finally:
        await stack.stop()
        await sim.stop()

    spans = exporter.get_finished_spans()
    names = {span.name for span in spans}
    for expected in (
        "drift.alarm",
        "SignalWithStartWorkflow:DriftResponseWorkflow",
        "RunWorkflow:DriftResponseWorkflow",
        "RunActivity:record_drift_event",
        "RunActivity:plan_response",
        "RunActivity:write_plc_setpoint",
        "RunActivity:open_work_order",
    ):
        assert expected in names, (expected, sorted(names))
    # Every span — alarm, start, workflow, each activity (agents included) — is in one trace.
    assert {format(span.context.trace_id, "032x") for span in spans} == {trace_id}
    assert len([span for span in spans if span.name.startswith("RunActivity:")]) >= 5
    description = await pool.fetchval(
        "SELECT description FROM work_orders WHERE id = $1",
        int(result.work_order_id.removeprefix("WO-")),
    )
    assert f"Trace: {trace_id}" in description
