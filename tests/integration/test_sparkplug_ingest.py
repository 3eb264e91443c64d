"""Sparkplug B and JSON ingest against a real Mosquitto: births and aliases, sequence gaps and
rebirth requests, deaths, bad input, TLS with a password, and nothing lost across an ingest
disconnect or a broker restart (persistent session, QoS 1, broker persistence)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import asyncpg
import pytest

from dev.mosquitto import Mosquitto
from factorylm import sparkplug as sp
from factorylm.plant import Plant, Plc
from factorylm.settings import Settings
from helpers import until
from ingest.manager import CollectorManager
from ingest.mqtt_collector import (
    PAYLOAD_ISSUE,
    QUEUE_FULL,
    UNDECLARED_ALIAS,
    MqttJsonCollector,
    SparkplugCollector,
)
from ingest.writer import BatchWriter
from mqtt_rig import HandNode, Samples, mqtt, sparkplug_plc, tls_context

T0 = 1_790_000_000_000  # ms: 2026-09-21, a fixed edge-node clock the stored rows must show


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    async with Mosquitto(directory=tmp_path / "broker") as running:
        yield running


@contextlib.asynccontextmanager
async def running(collector: SparkplugCollector | MqttJsonCollector) -> AsyncIterator[None]:
    task = asyncio.create_task(collector.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _ms(when: datetime) -> int:
    return round(when.timestamp() * 1000)


async def test_births_and_aliased_data_are_stored_with_the_nodes_timestamps_over_tls_with_a_password(
    tmp_path: Path, settings: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLM_TEST_MQTT_PASSWORD", "s3cret-ingest")
    async with Mosquitto(
        directory=tmp_path / "broker", tls=True, users={"ingest": "s3cret-ingest", "edge": "e"}
    ) as broker:
        assert broker.tls_port is not None and broker.ca_file is not None
        plc_id = f"spb-tls-{tmp_path.name[-8:].replace('_', '-')}"
        plc = sparkplug_plc(
            broker,
            plc_id,
            port=broker.tls_port,
            tls=True,
            ca_file=str(broker.ca_file),
            username="ingest",
            password_env="FLM_TEST_MQTT_PASSWORD",
        )
        writer = BatchWriter(settings.pg_dsn, max_rows=10, max_delay_s=0.05)
        manager = CollectorManager(
            Plant.model_validate({"plcs": [plc]}),
            _store(writer),
            dsn=settings.pg_dsn,
            health_interval_s=60,
        )
        writer.start()
        await manager.start()
        try:
            edge = aiomqtt.Client(
                broker.host,
                broker.tls_port,
                username="edge",
                password="e",
                tls_context=tls_context(broker),
                protocol=aiomqtt.ProtocolVersion.V311,
            )
            async with edge:
                node = HandNode(edge, f"edge-{plc_id}")
                collector = manager.collectors[0]
                assert isinstance(collector, SparkplugCollector)
                await until("subscribed", lambda: collector.connects == 1)
                await node.births(speed=1500.0, temp=40.25, run=True, stamp=T0)
                await node.ddata(T0 + 100, a1=1501.5)
                await node.ddata(T0 + 200, a1=1502.0, a2=40.5)
                await until("three samples of speed", lambda: writer.written >= 5)
        finally:
            await manager.stop()
            await writer.stop()
            await manager.close()
    rows = await pool.fetch(
        "SELECT time, metric, value FROM samples WHERE plc_id = $1 ORDER BY time, metric", plc_id
    )
    got = [(_ms(r["time"]) - T0, r["metric"], r["value"]) for r in rows]
    assert got == [
        (0, "speed", 1500.0),
        (0, "temp", 40.25),
        (100, "speed", 1501.5),
        (200, "speed", 1502.0),
        (200, "temp", 40.5),
    ]


def _store(writer: BatchWriter):  # type: ignore[no-untyped-def]
    def sink(plc: Plc, when: datetime, mono: float, values: dict[str, float]) -> None:
        writer.add((when, plc.id, name, value) for name, value in values.items())

    return sink


async def test_a_wrong_password_makes_a_failing_collector_that_names_the_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLM_TEST_MQTT_PASSWORD", "not-it")
    async with Mosquitto(directory=tmp_path / "broker", users={"ingest": "right"}) as broker:
        plc = sparkplug_plc(
            broker, "spb-badpw", username="ingest", password_env="FLM_TEST_MQTT_PASSWORD"
        )
        collector = SparkplugCollector(plc, Samples(), max_backoff_s=0.5)
        async with running(collector):
            await until("two failed attempts", lambda: collector.consecutive_errors >= 2)
        assert collector.connects == 0
        assert collector.last_error is not None
        assert f"MQTT broker 127.0.0.1:{broker.port}" in collector.last_error
        assert "not-it" not in collector.last_error


async def test_a_sequence_gap_keeps_the_data_and_asks_the_node_for_a_rebirth(
    broker: Mosquitto,
) -> None:
    plc = sparkplug_plc(broker, "spb-gap")
    samples = Samples()
    collector = SparkplugCollector(plc, samples)
    commands: list[sp.SpPayload] = []
    async with mqtt(broker, "watcher") as watcher, mqtt(broker, "edge") as edge:
        await watcher.subscribe(f"spBv1.0/plant/NCMD/edge-{plc.id}", qos=1)

        async def watch() -> None:
            with contextlib.suppress(aiomqtt.MqttError):  # the watcher disconnecting at the end
                async for message in watcher.messages:
                    assert isinstance(message.payload, bytes)
                    commands.append(sp.decode(message.payload))

        watching = asyncio.create_task(watch())
        node = HandNode(edge, f"edge-{plc.id}")
        async with running(collector):
            # At start the collector knows no aliases and asks for them.
            await until("the first rebirth request", lambda: len(commands) == 1)
            await node.births(speed=10.0, temp=20.0, run=True, stamp=T0)
            await node.ddata(T0 + 1, a1=11.0)  # seq 2
            await node.ddata(T0 + 2, seq=5, a1=14.0)  # 3 and 4 never arrive
            await until("the gap's data", lambda: samples.values("speed") == [10.0, 11.0, 14.0])
            await until("a rebirth request for the gap", lambda: len(commands) == 2)
            await node.ddata(T0 + 3, a1=15.0)  # seq 6 follows the gap's 5: no new request
            await until("data after the gap", lambda: 15.0 in samples.values("speed"))
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    assert collector.gaps == 1
    assert [m.name for c in commands for m in c.metrics] == [sp.REBIRTH, sp.REBIRTH]
    assert all(m.value == 1.0 for c in commands for m in c.metrics)


async def test_a_redelivered_message_is_stored_once(broker: Mosquitto) -> None:
    plc = sparkplug_plc(broker, "spb-dup")
    samples = Samples()
    collector = SparkplugCollector(plc, samples)
    async with mqtt(broker, "edge") as edge, running(collector):
        await until("subscribed", lambda: collector.connects == 1)
        node = HandNode(edge, f"edge-{plc.id}")
        await node.births(speed=1.0, temp=2.0, run=True, stamp=T0)
        await node.ddata(T0 + 1, a1=3.0)
        await node.ddata(T0 + 1, seq=node.seq, a1=3.0)  # the same message again (QoS 1)
        await node.ddata(T0 + 2, a1=4.0)
        await until("the last value", lambda: 4.0 in samples.values("speed"))
    assert samples.values("speed") == [1.0, 3.0, 4.0]
    assert collector.duplicates == 1 and collector.gaps == 0


async def test_bad_payloads_aliases_and_json_fields_are_counted_never_crash_and_lose_nothing(
    broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    plc = sparkplug_plc(broker, "spb-bad")
    samples = Samples()
    collector = SparkplugCollector(plc, samples)
    json_plc = Plc.model_validate(
        {
            "id": "json-bad",
            "vendor": "gateway",
            "protocol": "mqtt_json",
            "port": broker.port,
            "metrics": [
                {"name": "level", "topic": "site/tank1", "json_path": "data.level"},
                {"name": "temp", "topic": "site/tank1", "json_path": "data.temp"},
            ],
        }
    )
    json_samples = Samples()
    json_collector = MqttJsonCollector(json_plc, json_samples)
    async with mqtt(broker, "edge") as edge, running(collector), running(json_collector):
        await until("subscribed", lambda: collector.connects == json_collector.connects == 1)
        node = HandNode(edge, f"edge-{plc.id}")
        await node.births(speed=5.0, temp=6.0, run=True, stamp=T0)
        await until("the births", lambda: samples.values("speed") == [5.0])
        for _ in range(3):
            await node.raw(sp.MessageType.DDATA, b"\x0a\xff\xff\xff garbage", node.device)
        await node.ddata(T0 + 1, a1=7.0, a9=1.0)  # alias 9 was in no birth
        await node.ddata(T0 + 2, a1=8.0)
        await edge.publish("site/tank1", json.dumps({"data": {"level": 3.5}}), qos=1)
        await edge.publish("site/tank1", b"{not json", qos=1)
        await edge.publish("site/tank1", json.dumps({"data": {"level": 4.0, "temp": 21}}), qos=1)
        await until("the last good value", lambda: 8.0 in samples.values("speed"))
        await until("the last JSON message", lambda: json_samples.values("level") == [3.5, 4.0])
    assert samples.values("speed") == [5.0, 7.0, 8.0]
    assert samples.values("temp") == [6.0]
    assert collector.bad_samples == {PAYLOAD_ISSUE: 3, UNDECLARED_ALIAS: 1}
    assert json_samples.values("temp") == [21.0]
    assert json_collector.bad_samples == {"temp": 2, "level": 1}
    undecodable = [r for r in caplog.records if "undecodable payload" in r.getMessage()]
    assert len(undecodable) == 1 and "spBv1.0/plant/DDATA/edge-spb-bad/filler" in (
        undecodable[0].getMessage()
    )


async def test_ndeath_makes_the_collector_failing_until_the_node_is_born_again(
    broker: Mosquitto, settings: Settings
) -> None:
    plc = sparkplug_plc(broker, "spb-death")
    samples = Samples()
    manager = CollectorManager(Plant.model_validate({"plcs": [plc]}), samples, dsn=settings.pg_dsn)
    collector = manager.collectors[0]
    await manager.start()
    try:
        async with mqtt(broker, "edge") as edge:
            node = HandNode(edge, f"edge-{plc.id}")
            now = sp.now_ms()  # the state reads the age of the node's own timestamps
            await until("subscribed", lambda: getattr(collector, "connects", 0) == 1)
            await node.births(speed=1.0, temp=2.0, run=True, stamp=now)
            await until("ok", lambda: manager.state(collector) == "ok")
            await node.death()
            await until("failing", lambda: manager.state(collector) == "failing")
            assert "NDEATH" in (collector.last_error or "")
            await node.ddata(now + 1, a1=9.0)  # after a death, data without a birth is not taken
            await node.births(speed=3.0, temp=4.0, run=True, stamp=now + 2, bdseq=1)
            await until("ok again", lambda: manager.state(collector) == "ok")
            # The will of the connection before (bdSeq 0) comes late: the new session stands.
            await node.death(bdseq=0)
            await node.ddata(now + 3, a1=5.0)
            await until("data after the late death", lambda: 5.0 in samples.values("speed"))
            assert manager.state(collector) == "ok"
    finally:
        await manager.stop()
        await manager.close()
    assert samples.values("speed") == [1.0, 3.0, 5.0]


async def test_nothing_published_while_the_ingest_is_away_is_lost_even_across_a_broker_restart(
    broker: Mosquitto,
) -> None:
    plc = sparkplug_plc(broker, "spb-away")
    samples = Samples()
    collector = SparkplugCollector(plc, samples)
    async with mqtt(broker, "edge") as edge:
        node = HandNode(edge, f"edge-{plc.id}")
        async with running(collector):
            await until("subscribed", lambda: collector.connects == 1)
            await node.births(speed=100.0, temp=1.0, run=True, stamp=T0)
            await until("the births", lambda: samples.values("speed") == [100.0])
        # The ingest is away (its session stays on the broker): the node keeps publishing.
        for i in range(1, 51):
            await node.ddata(T0 + i, a1=100.0 + i)
        await node.flush()
    await broker.restart()  # the queued messages are in mosquitto's persistence file
    async with running(collector):
        await until("all 50", lambda: len(samples.values("speed")) == 51)
    assert samples.values("speed") == [100.0 + i for i in range(51)]
    assert collector.connects == 2 and collector.gaps == 0


async def test_a_running_ingest_reconnects_after_a_broker_restart_and_the_node_is_reborn(
    broker: Mosquitto,
) -> None:
    from dev.simulator.sparkplug import SimulatedSparkplugNode

    plc = sparkplug_plc(
        broker,
        "spb-restart",
        metrics=[
            {
                "name": "speed",
                "metric": "Motor/Speed",
                "type": "real",
                "baseline": {"mean": 50, "std": 1},
            }
        ],
    )
    peer = SimulatedSparkplugNode(plc, seed=1, tick_s=0.05)
    samples = Samples()
    collector = SparkplugCollector(plc, samples, max_backoff_s=1.0)
    await peer.start()
    try:
        async with running(collector):
            await until("data", lambda: len(samples.rows) >= 5)
            await broker.restart()
            await until("the collector is back", lambda: collector.connects == 2, timeout_s=20)
            seen = len(samples.rows)
            await until("data again", lambda: len(samples.rows) >= seen + 5, timeout_s=20)
            assert collector.consecutive_errors == 0
    finally:
        await peer.stop()
    stamps = [when for when, _ in samples.rows]
    assert stamps == sorted(stamps) and all(w.tzinfo is UTC for w in stamps)


async def test_the_demo_plants_edge_node_is_simulated_on_a_broker_the_simulator_brings(
    tmp_path: Path,
) -> None:
    from dev.simulator.plant import PlantSimulator
    from factorylm.protocols import Protocol
    from helpers import plant_with_free_ports

    plant, _ = plant_with_free_ports(tmp_path)
    filler = plant.plc("filler-1")
    assert filler is not None and filler.protocol is Protocol.SPARKPLUG_B
    assert plant.action("stop_filler") is not None
    sim = PlantSimulator(plant, only={Protocol.SPARKPLUG_B})
    samples = Samples()
    collector = SparkplugCollector(filler, samples)
    await sim.start()
    try:
        assert [b.port for b in sim.brokers] == [filler.tcp_port]
        broker = sim.brokers[0]
        async with running(collector):
            await until("ten fill rates", lambda: len(samples.values("fill_rate")) >= 10)
    finally:
        await sim.stop()
    assert not broker.running
    for name in ("fill_rate", "seal_temp"):
        metric = filler.metric(name)
        assert metric is not None and metric.baseline is not None
        values = samples.values(name)
        assert values and all(
            abs(v - metric.baseline.mean) < 6 * metric.baseline.std for v in values
        )
    assert collector.bad_samples == {} and collector.gaps == 0


async def test_the_simulated_json_device_feeds_the_json_collector(broker: Mosquitto) -> None:
    from dev.simulator.mqtt_json import SimulatedJsonDevice

    plc = Plc.model_validate(
        {
            "id": "json-sim",
            "vendor": "gateway",
            "protocol": "mqtt_json",
            "port": broker.port,
            "poll_interval_ms": 50,
            "metrics": [
                {
                    "name": "level",
                    "topic": "site/t1",
                    "json_path": "tank.level",
                    "baseline": {"mean": 3.0, "std": 0.1},
                },
                {
                    "name": "flow",
                    "topic": "site/t2",
                    "json_path": "flow",
                    "baseline": {"mean": 40.0, "std": 1.0},
                },
            ],
        }
    )
    samples = Samples()
    collector = MqttJsonCollector(plc, samples)
    device = SimulatedJsonDevice(plc, seed=4)
    async with running(collector):
        await until("subscribed", lambda: collector.connects == 1)
        await device.start()
        try:
            await until(
                "both topics",
                lambda: len(samples.values("level")) >= 5 and len(samples.values("flow")) >= 5,
            )
        finally:
            await device.stop()
    # The device's signals, through the nested (tank.level) and top-level (flow) paths.
    assert all(abs(v - 3.0) < 0.6 for v in samples.values("level"))
    assert all(abs(v - 40.0) < 6.0 for v in samples.values("flow"))
    assert collector.bad_samples == {}


def test_a_full_receive_queue_counts_what_it_drops(broker: Mosquitto) -> None:
    plc = sparkplug_plc(broker, "spb-full")
    collector = SparkplugCollector(plc, Samples())
    queue = collector._queue_type()(maxsize=2)
    message = aiomqtt.Message("spBv1.0/plant/DDATA/edge-spb-full/filler", b"", 0, False, 1, None)
    queue.put_nowait(message)
    queue.put_nowait(message)
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(message)  # aiomqtt catches this and discards the message
    assert queue.qsize() == 2 and collector.bad_samples == {QUEUE_FULL: 1}


async def test_a_born_node_whose_values_do_not_change_stays_fresh(broker: Mosquitto) -> None:
    plc = sparkplug_plc(broker, "spb-quiet")
    samples = Samples()
    collector = SparkplugCollector(plc, samples)
    async with mqtt(broker, "edge") as edge, running(collector):
        await until("subscribed", lambda: collector.connects == 1)
        node = HandNode(edge, f"edge-{plc.id}")
        await node.births(speed=1.0, temp=2.0, run=True, stamp=sp.now_ms())
        await until("born", lambda: collector.last_good is not None)
        born_at = collector.last_good
        assert born_at is not None
        # Not one message more: the node reports by exception and nothing changed.
        await until("a fresher sign of life", lambda: (collector.last_good or born_at) > born_at)
    assert len(samples.rows) == 1  # the birth's values only: no data arrived meanwhile


async def test_ddeath_of_the_entrys_device_makes_it_failing_until_its_next_birth(
    broker: Mosquitto,
) -> None:
    plc = sparkplug_plc(broker, "spb-ddeath")
    samples = Samples()
    collector = SparkplugCollector(plc, samples)
    async with mqtt(broker, "edge") as edge, running(collector):
        await until("subscribed", lambda: collector.connects == 1)
        node = HandNode(edge, f"edge-{plc.id}")
        await node.births(speed=1.0, temp=2.0, run=True, stamp=T0)
        await until("born", lambda: samples.values("speed") == [1.0])
        node.seq += 1
        await node.raw(sp.MessageType.DDEATH, sp.encode([], seq=node.seq), node.device)
        await until("failing", lambda: collector.consecutive_errors == 1)
        assert "device filler of edge-spb-ddeath is offline (DDEATH)" in (
            collector.last_error or ""
        )
        # Another device's death is not this entry's.
        node.seq += 1
        await node.raw(sp.MessageType.DDEATH, sp.encode([], seq=node.seq), "capper")
        node.seq += 1
        metrics = [sp.OutMetric("Motor/Speed", sp.DataType.FLOAT, 9.0, alias=1)]
        await node.raw(
            sp.MessageType.DBIRTH,
            sp.encode(metrics, seq=node.seq, timestamp_ms=T0 + 5),
            node.device,
        )
        await until("back", lambda: collector.consecutive_errors == 0)
    assert samples.values("speed") == [1.0, 9.0]
    assert collector.failures == 1 and collector.gaps == 0
