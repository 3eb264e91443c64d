"""A forecast alarm through DriftResponseWorkflow on the real stack: a low-priority work order,
due when the trend is forecast to reach its threshold, saying so."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client

from app.stack import Stack
from factorylm.models.drift import Detection
from factorylm.models.forecasts import Forecast
from factorylm.settings import Settings
from helpers import make_alert, plant_with_free_ports
from workflows.drift_response import DriftResponseWorkflow


@pytest.fixture
async def stack(tmp_path: Path, settings: Settings, client: Client) -> AsyncIterator[Stack]:
    plant, _ = plant_with_free_ports(tmp_path)
    queue = f"fc-wo-{uuid.uuid4().hex[:8]}"
    s = settings.model_copy(update={"task_queue": queue, "plc_task_queue": f"{queue}-edge"})
    stack = Stack(s, plant, client, run_ingest=False, run_api=False, run_edge_worker=False)
    await stack.start()
    yield stack
    await stack.stop()


async def test_a_forecast_alarm_opens_a_low_priority_work_order_due_at_the_forecast(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    computed = datetime.now(UTC)
    forecast = Forecast(
        plc_id="conveyor-1", metric="vibration", unit="mm/s", target="sigma", threshold=4.0,
        threshold_sigma=4.0, level=1.0, slope_per_hour=0.1, eta_s=30 * 3600.0,
        eta_low_s=24 * 3600.0, eta_high_s=40 * 3600.0, minutes=120, computed_at=computed,
    )  # fmt: skip
    text = f"{forecast.describe()}, within the 48 h forecast horizon"
    alert = make_alert(1.0).model_copy(
        update={
            "forecast": forecast,
            "detection": Detection(detector="forecast", reason=text),
        }
    )
    handle = await stack.client.start_workflow(
        DriftResponseWorkflow.run,
        alert,
        id=f"{alert.workflow_id}-{uuid.uuid4().hex[:6]}",
        task_queue=stack.settings.task_queue,
    )
    result = await handle.result()
    # 1σ is below every catalog action's min_sigma: no action, only the work order.
    assert result.action is None and result.work_order_id is not None
    wo = await pool.fetchrow(
        "SELECT priority, due_date, description FROM work_orders WHERE external_key LIKE $1",
        f"{handle.id}/%",
    )
    assert wo["priority"] == "LOW"
    assert wo["due_date"] == (computed + timedelta(hours=30)).date()
    assert (
        "forecast alarm, vibration on conveyor-1 will reach 4σ (4 mm/s) in ~30 h"
        in (wo["description"])
    )
    assert "(range 24 h–40 h)" in wo["description"]
