"""The demo plant's MQTT side on a stack with free ports (the code `make demo` runs): its
start-up lines name the broker, the Sparkplug edge node and the event publisher; the ingest
stores the edge node's metrics; a PLC write FactoryLM audits reaches the plant's broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path

import aiomqtt
import asyncpg
import pytest
from temporalio.client import Client

from dev.demo.environment import Demo, demo_settings
from factorylm.settings import Settings
from helpers import free_port, plant_with_free_ports, until


async def test_the_demo_starts_a_broker_a_sparkplug_node_and_publishes_factorylms_events(
    tmp_path: Path,
    settings: Settings,
    client: Client,
    pool: asyncpg.Pool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plant, plant_file = plant_with_free_ports(tmp_path)
    filler = plant.plc("filler-1")
    assert filler is not None and plant.publish is not None
    assert plant.publish.port == filler.tcp_port  # the demo's one broker
    queue = f"mqtt-demo-{uuid.uuid4().hex[:8]}"
    s = demo_settings(
        settings.model_copy(
            update={
                "plant_file": plant_file,
                "task_queue": queue,
                "plc_task_queue": f"{queue}-edge",
                "api_port": free_port(),
            }
        )
    )
    demo = Demo(s)
    events: list[dict[str, object]] = []
    try:
        await demo.up()
        out = capsys.readouterr().out
        assert f"MQTT broker (Mosquitto) on 127.0.0.1:{filler.tcp_port}" in out
        assert "simulated Sparkplug B PLC filler-1 on mqtt://" in out
        assert "under demo-plant/factorylm/# (json)" in out
        assert demo.stack is not None and demo.stack.publisher is not None
        publisher = demo.stack.publisher
        await until("the publisher's cursor", lambda: len(publisher.cursors) == 5)
        async with aiomqtt.Client("127.0.0.1", filler.tcp_port, identifier="scada") as scada:
            await scada.subscribe("demo-plant/factorylm/+/+", qos=1)

            async def listen() -> None:
                with contextlib.suppress(aiomqtt.MqttError):
                    async for message in scada.messages:
                        assert isinstance(message.payload, bytes)
                        events.append(json.loads(message.payload))

            listening = asyncio.create_task(listen())
            rows = await until(
                "filler-1's metrics stored",
                lambda: pool.fetchval(
                    "SELECT count(DISTINCT metric) FROM samples WHERE plc_id = 'filler-1'"
                    " AND time > now() - interval '1 minute'"
                ),
            )
            assert rows == 2
            # A write as the edge worker audits it: the plant's SCADA hears of it.
            await pool.execute(
                """INSERT INTO plc_writes (action_id, workflow_id, action, plc_id, target,
                       value_written, value_before, value_read_back, status, completed_at)
                   VALUES ($1, 'wf-demo', 'stop_filler', 'filler-1', 'filler_run', 0, 1, 0,
                           'verified', now())""",
                f"wf-demo/{queue}/stop_filler",
            )
            await until(
                "the write on the broker", lambda: any(e.get("kind") == "plc_write" for e in events)
            )
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
    finally:
        await demo.down()
    write = next(e for e in events if e.get("kind") == "plc_write")
    assert (write["plc_id"], write["setpoint"], write["status"]) == (
        "filler-1",
        "filler_run",
        "verified",
    )
