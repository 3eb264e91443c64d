"""A catalog write to a Sparkplug edge node, through the PLC-write activity and a real
Mosquitto: sent as a DCMD, verified by the node's next DDATA, audited; an offline node is
never written."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import asyncpg
import pytest
from temporalio.testing import ActivityEnvironment

from activities.plc_write import PlcWriteActivities
from dev.mosquitto import Mosquitto
from dev.simulator.sparkplug import SimulatedSparkplugNode
from factorylm import sparkplug as sp
from factorylm.drivers import PlcError
from factorylm.models.plc_writes import PlcWriteInput
from factorylm.plant import Plant
from helpers import until
from mqtt_rig import mqtt, sparkplug_plc


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    async with Mosquitto(directory=tmp_path / "broker") as running:
        yield running


def _plant(broker: Mosquitto, plc_id: str, *, device: bool = True) -> Plant:
    plc = sparkplug_plc(broker, plc_id)
    raw = plc.model_dump(by_alias=True, exclude_none=True)
    if not device:
        del raw["device"]  # the node's own metrics
    return Plant.model_validate(
        {
            "plcs": [raw],
            "actions": [
                {
                    "name": "stop_filler",
                    "description": "Stop the filler's motor",
                    "kind": "plc_write",
                    "policy": "auto",
                    "plc": plc_id,
                    "setpoint": "run",
                    "value": 0,
                }
            ],
        }
    )


@contextlib.asynccontextmanager
async def _commands(
    broker: Mosquitto, plc_id: str, kind: str = "DCMD"
) -> AsyncIterator[list[tuple[str, sp.SpPayload]]]:
    seen: list[tuple[str, sp.SpPayload]] = []
    async with mqtt(broker, f"watch-{plc_id}") as watcher:
        await watcher.subscribe(f"spBv1.0/plant/{kind}/edge-{plc_id}/#", qos=1)

        async def watch() -> None:
            with contextlib.suppress(aiomqtt.MqttError):
                async for message in watcher.messages:
                    assert isinstance(message.payload, bytes)
                    seen.append((message.topic.value, sp.decode(message.payload)))

        task = asyncio.create_task(watch())
        try:
            yield seen
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_a_catalog_write_goes_as_a_dcmd_and_is_verified_by_the_next_ddata(
    broker: Mosquitto, pool: asyncpg.Pool
) -> None:
    plant = _plant(broker, "spb-write")
    peer = SimulatedSparkplugNode(plant.plcs[0], seed=2)
    acts = PlcWriteActivities(pool, plant, [])
    req = PlcWriteInput(
        action_id="wf-spb/run/stop", workflow_id="wf-spb", action="stop_filler", value=0
    )
    await peer.start()
    try:
        async with _commands(broker, "spb-write") as commands:
            result = await ActivityEnvironment().run(acts.write_plc_setpoint, req)
            await until("the command seen on the broker", lambda: len(commands) == 1)
    finally:
        await acts.close()
        await peer.stop()
    assert result.verified and result.value_before == 1.0 and result.value_read_back == 0.0
    assert await peer.read("run") == 0.0 and peer.commands == 1
    topic, payload = commands[0]
    assert topic == "spBv1.0/plant/DCMD/edge-spb-write/filler"
    assert [(m.name, m.datatype, m.value) for m in payload.metrics] == [
        ("Motor/Run", sp.DataType.BOOLEAN, 0.0)
    ]
    row = await pool.fetchrow("SELECT * FROM plc_writes WHERE action_id = $1", req.action_id)
    assert (row["status"], row["value_before"], row["value_read_back"]) == ("verified", 1.0, 0.0)


async def test_an_offline_edge_node_is_never_written_and_the_attempt_is_audited(
    broker: Mosquitto, pool: asyncpg.Pool
) -> None:
    plant = _plant(broker, "spb-gone")
    acts = PlcWriteActivities(pool, plant, [])
    req = PlcWriteInput(
        action_id="wf-gone/run/stop", workflow_id="wf-gone", action="stop_filler", value=0
    )
    try:
        async with _commands(broker, "spb-gone") as commands:
            with pytest.raises(PlcError, match="no value of run arrived"):
                await ActivityEnvironment().run(acts.write_plc_setpoint, req)
    finally:
        await acts.close()
    assert commands == []
    row = await pool.fetchrow("SELECT * FROM plc_writes WHERE action_id = $1", req.action_id)
    assert row["status"] == "failed" and "read before write" in row["error"]


async def test_a_node_level_setpoint_is_written_with_an_ncmd(
    broker: Mosquitto, pool: asyncpg.Pool
) -> None:
    plant = _plant(broker, "spb-node", device=False)
    peer = SimulatedSparkplugNode(plant.plcs[0], seed=5)
    acts = PlcWriteActivities(pool, plant, [])
    req = PlcWriteInput(
        action_id="wf-node/run/stop", workflow_id="wf-node", action="stop_filler", value=0
    )
    await peer.start()
    try:
        async with _commands(broker, "spb-node", "NCMD") as commands:
            result = await ActivityEnvironment().run(acts.write_plc_setpoint, req)
            # Besides the driver's rebirth request, the write.
            await until(
                "the NCMD seen on the broker",
                lambda: any(c[1].metrics[0].name == "Motor/Run" for c in commands),
            )
    finally:
        await acts.close()
        await peer.stop()
    assert result.verified and result.value_read_back == 0.0
    assert await peer.read("run") == 0.0
    writes = [c for c in commands if c[1].metrics[0].name == "Motor/Run"]
    assert [topic for topic, _ in writes] == ["spBv1.0/plant/NCMD/edge-spb-node"]
    assert writes[0][1].metrics[0].value == 0.0
