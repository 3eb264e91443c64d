"""FactoryLM's events on the plant's broker: rows the activities commit to the audit tables
appear under the plant's namespace (JSON or Sparkplug), once, and a restarted publisher goes
on from its cursor on the broker instead of starting over."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import asyncpg
import pytest

from dev.mosquitto import Mosquitto
from factorylm import sparkplug as sp
from factorylm.plant import Plant
from helpers import until
from ingest.publisher import EventPublisher
from mqtt_rig import mqtt


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    async with Mosquitto(directory=tmp_path / "broker") as running:
        yield running


def _plant(broker: Mosquitto, namespace: str, fmt: str = "json") -> Plant:
    return Plant.model_validate(
        {
            "name": "test-plant",
            "plcs": [
                {
                    "id": "conveyor-1",
                    "vendor": "generic_modbus",
                    "protocol": "modbus_tcp",
                    "metrics": [{"name": "vibration", "register": 0}],
                    "setpoints": [{"name": "motor_run", "register": 11, "min": 0, "max": 1}],
                }
            ],
            "actions": [
                {
                    "name": "shutdown_motor",
                    "description": "stop",
                    "kind": "plc_write",
                    "policy": "approval",
                    "plc": "conveyor-1",
                    "setpoint": "motor_run",
                    "value": 0,
                }
            ],
            "publish": {
                "port": broker.port,
                "namespace": namespace,
                "format": fmt,
                "interval_ms": 50,
            },
        }
    )


@contextlib.asynccontextmanager
async def _listen(broker: Mosquitto, pattern: str) -> AsyncIterator[list[tuple[str, bytes]]]:
    got: list[tuple[str, bytes]] = []
    async with mqtt(broker, f"scada-{pattern[:20]}") as scada:
        await scada.subscribe(pattern, qos=1)

        async def listen() -> None:
            with contextlib.suppress(aiomqtt.MqttError):
                async for message in scada.messages:
                    assert isinstance(message.payload, bytes)
                    got.append((message.topic.value, message.payload))

        task = asyncio.create_task(listen())
        try:
            yield got
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _events(pool: asyncpg.Pool, tag: str) -> None:
    """One row of each kind, as the activities write them."""
    await pool.execute(
        """INSERT INTO drift_events (workflow_id, plc_id, vendor, metric, magnitude_sigma,
               window_mean, baseline_mean, baseline_std, detected_at, text)
           VALUES ($1, 'conveyor-1', 'generic_modbus', 'vibration', 6.5, 4.0, 2.1, 0.3, now(),
                   'drift')""",
        f"drift-conveyor-1-vibration-{tag}",
    )
    await pool.execute(
        """INSERT INTO approval_requests (workflow_id, run_id, code, recipient, action, status,
               answered_at, answered_by)
           VALUES ($1, 'run', '1234', 'whatsapp:+15550100001', 'shutdown_motor', 'approved',
                   now(), 'whatsapp:+15550100001')""",
        f"wf-{tag}",
    )
    await pool.execute(
        """INSERT INTO plc_writes (action_id, workflow_id, action, plc_id, target,
               value_written, value_before, value_read_back, status, completed_at)
           VALUES ($1, $2, 'shutdown_motor', 'conveyor-1', 'motor_run', 0, 1, 0, 'verified',
                   now())""",
        f"wf-{tag}/run/shutdown_motor",
        f"wf-{tag}",
    )
    await pool.execute(
        """INSERT INTO work_orders (external_key, title, asset_id) VALUES ($1, 'Vibration', 'conveyor-1')""",
        f"wo-{tag}",
    )


async def test_each_committed_event_is_published_once_under_the_namespace_and_a_restart_resumes(
    broker: Mosquitto, pool: asyncpg.Pool
) -> None:
    plant = _plant(broker, "acme/site-json")
    async with _listen(broker, "acme/site-json/factorylm/+/+") as got:
        first = EventPublisher(plant, pool, settle_s=0)
        first.start()
        await until("the cursor", lambda: len(first.cursors) == 5)
        await _events(pool, "a")
        await until("five events", lambda: len(got) == 5)
        await first.stop()
        second = EventPublisher(plant, pool, settle_s=0)
        second.start()
        await until("the cursor from the broker", lambda: len(second.cursors) == 5)
        await _events(pool, "b")
        await until("five more", lambda: len(got) == 10)
        await asyncio.sleep(0)  # nothing else is on its way: the counts are the publisher's
        await second.stop()
    topics = sorted({t for t, _ in got})
    assert topics == [
        "acme/site-json/factorylm/approval_answered/conveyor-1",
        "acme/site-json/factorylm/approval_requested/conveyor-1",
        "acme/site-json/factorylm/drift_alarm/conveyor-1",
        "acme/site-json/factorylm/plc_write/conveyor-1",
        "acme/site-json/factorylm/work_order/conveyor-1",
    ]
    bodies = [json.loads(p) for _, p in got]
    assert len({b["event_id"] for b in bodies}) == 10  # none twice
    assert sum(second.published.values()) == 5
    write = next(b for b in bodies if b["kind"] == "plc_write")
    assert (write["status"], write["value_written"], write["value_read_back"]) == ("verified", 0, 0)
    assert all("15550100001" not in p.decode() for _, p in got)  # no approver's number


async def test_sparkplug_format_births_factorylm_as_an_edge_node_and_sends_events_as_ndata(
    broker: Mosquitto, pool: asyncpg.Pool
) -> None:
    plant = _plant(broker, "acme-spb", "sparkplug")
    async with _listen(broker, "spBv1.0/acme-spb/#") as got:
        publisher = EventPublisher(plant, pool, settle_s=0)
        publisher.start()
        await until("the birth", lambda: len(got) == 1)
        await _events(pool, "spb")
        await until("five events", lambda: len(got) == 6)
        await publisher.stop()
    assert got[0][0] == "spBv1.0/acme-spb/NBIRTH/FactoryLM"
    birth = sp.decode(got[0][1])
    assert {m.name for m in birth.metrics} >= {"Events/drift_alarm", "Events/plc_write"}
    data = [sp.decode(p) for t, p in got[1:] if t == "spBv1.0/acme-spb/NDATA/FactoryLM"]
    assert [d.seq for d in data] == [1, 2, 3, 4, 5]
    assert {d.metrics[0].name for d in data} == {
        "Events/drift_alarm",
        "Events/approval_requested",
        "Events/approval_answered",
        "Events/plc_write",
        "Events/work_order",
    }
