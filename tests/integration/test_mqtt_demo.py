"""The demo plant's MQTT side on a stack with free ports (the code `make demo` runs): its
start-up lines name the broker, the Sparkplug edge node and the event publisher; a drift of the
edge node's seal temperature runs the drift workflow to the catalog action stop_filler, approved
on WhatsApp, written as a DCMD and read back from the node's next DDATA; the plant's SCADA sees
each step on the broker."""

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

from dev.demo.drift import run_drift_scenario
from dev.demo.environment import Demo, Scenario, demo_settings, say
from factorylm.settings import Settings
from helpers import free_port, plant_with_free_ports, until


async def test_a_sparkplug_drift_is_answered_by_an_approved_dcmd_read_back_and_seen_on_the_broker(
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
    demo = Demo(s, scenario=Scenario(plc_id="filler-1", metric="seal_temp", step_sigma=6.0))
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
            await scada.subscribe("demo-plant/factorylm/+/filler-1", qos=1)

            async def listen() -> None:
                with contextlib.suppress(aiomqtt.MqttError):
                    async for message in scada.messages:
                        assert isinstance(message.payload, bytes)
                        events.append(json.loads(message.payload))

            listening = asyncio.create_task(listen())
            summary = await run_drift_scenario(demo, say)
            kinds = {"drift_alarm", "approval_requested", "approval_answered", "plc_write"}
            await until("the events on the broker", lambda: kinds <= {e["kind"] for e in events})
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
        peer_run = await demo.sims["filler-1"].read("filler_run")
    finally:
        await demo.down()
    assert summary["status"] == "completed"
    assert summary["workflow_id"] == "drift-demo-plant-filler-1-seal_temp"
    assert summary["action"] == "stop_filler" and summary["approved_by"] == s.approvers[0]
    assert summary["value_written"] == summary["value_read_back"] == 0
    assert peer_run == 0  # the edge node's own memory: the DCMD landed
    audit = await pool.fetchrow(
        "SELECT * FROM plc_writes WHERE workflow_id = $1 ORDER BY requested_at DESC LIMIT 1",
        summary["workflow_id"],
    )
    assert (audit["status"], audit["value_before"], audit["value_read_back"]) == ("verified", 1, 0)
    write = next(e for e in events if e["kind"] == "plc_write")
    assert (write["setpoint"], write["status"], write["value_read_back"]) == (
        "filler_run",
        "verified",
        0,
    )
    stored = await pool.fetchval(
        "SELECT count(DISTINCT metric) FROM samples WHERE plc_id = 'filler-1'"
        " AND time > now() - interval '5 minutes'"
    )
    assert stored == 2
