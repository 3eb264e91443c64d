"""OPC UA against asyncua's real server (dev/simulator/opcua.py): subscriptions into PostgreSQL
at the server's timestamps, bad statuses, unknown nodes and type mismatches as bad quality,
a server restart, polling, deadbands, security with a trust list and a password, catalog
writes in the node's type, and `factorylm plc browse`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from activities.plc_write import PlcWriteActivities
from app.commands.plc import browse_url, normalise_url
from dev.simulator.opcua import SimulatedOpcUaPlc, make_certificate
from factorylm.drivers import PlcError
from factorylm.drivers.opcua import OpcUaDriver, describe_certificate, fingerprint
from factorylm.models.plc_writes import PlcWriteInput
from factorylm.plant import Plant, Plc
from factorylm.settings import Settings
from helpers import free_port, until
from ingest.manager import CollectorManager
from ingest.service import IngestService
from ingest.subscription import OpcUaCollector


def opcua_plant(plc_id: str, port: int, **plc: Any) -> Plant:
    """One OPC UA machine: a double at a NodeId, an int32 at a browse path, two setpoints."""
    metrics = plc.pop(
        "metrics",
        [
            {"name": "temp", "node_id": f"ns=2;s={plc_id}.temp", "type": "double",
             "baseline": {"mean": 60.0, "std": 1.0}},
            {"name": "rpm", "browse_path": "2:Line/2:Mixer/2:Rpm", "type": "int32",
             "baseline": {"mean": 1200.0, "std": 5.0}},
        ],
    )  # fmt: skip
    return Plant.model_validate(
        {
            "plcs": [
                {
                    "id": plc_id,
                    "vendor": "generic_opcua",
                    "protocol": "opcua",
                    "port": port,
                    "poll_interval_ms": 100,
                    "timeout_ms": 1000,
                    "metrics": metrics,
                    "setpoints": [
                        {"name": "speed_sp", "node_id": f"ns=2;s={plc_id}.speed_sp",
                         "type": "double", "min": 0, "max": 100},
                        {"name": "batch_sp", "node_id": f"ns=2;s={plc_id}.batch_sp",
                         "type": "int32", "min": 0, "max": 500},
                    ],
                    **plc,
                }
            ],
            "actions": [
                {"name": "slow_mixer", "description": "speed to 42.5", "kind": "plc_write",
                 "policy": "auto", "plc": plc_id, "setpoint": "speed_sp", "value": 42.5},
                {"name": "small_batches", "description": "batch of 120", "kind": "plc_write",
                 "policy": "auto", "plc": plc_id, "setpoint": "batch_sp", "value": 120},
            ],
        }
    )  # fmt: skip


@pytest.fixture
async def mixer(tmp_path: Path) -> AsyncIterator[tuple[Plant, SimulatedOpcUaPlc]]:
    plant = opcua_plant(f"mixer-{uuid.uuid4().hex[:6]}", free_port())
    peer = SimulatedOpcUaPlc(plant.plcs[0], seed=5, tick_s=0.05, cert_dir=tmp_path / "server")
    await peer.start()
    yield plant, peer
    await peer.stop()


async def _ingest(settings: Settings, client: Client, plant: Plant) -> IngestService:
    s = settings.model_copy(update={"task_queue": f"opcua-{uuid.uuid4().hex[:8]}"})
    service = IngestService(s, plant, client)
    await service.start()
    return service


async def test_subscribed_values_are_stored_at_the_servers_source_timestamps(
    mixer: tuple[Plant, SimulatedOpcUaPlc], settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    plant, peer = mixer
    plc_id = plant.plcs[0].id
    ingest = await _ingest(settings, client, plant)
    try:
        collector = ingest.collectors[0]
        assert isinstance(collector, OpcUaCollector)
        await until("samples through the subscription", lambda: collector.cycles >= 10)
        assert collector.subscribed
        peer.hold("temp")
        stamp = datetime(2026, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)
        await peer.put("temp", 12.25, when=stamp)
        row = await until(
            "the held value stored",
            lambda: pool.fetchrow(
                "SELECT time, value FROM samples WHERE plc_id = $1 AND metric = 'temp' "
                "AND value = 12.25",
                plc_id,
            ),
        )
        assert row["time"] == stamp  # the source's timestamp, not when it was received
        rpm = await pool.fetchval(
            "SELECT count(*) FROM samples WHERE plc_id = $1 AND metric = 'rpm'", plc_id
        )
        assert rpm >= 5 and collector.bad_samples == {}
    finally:
        await ingest.stop()


async def test_a_bad_status_is_counted_as_bad_quality_and_never_stored(
    mixer: tuple[Plant, SimulatedOpcUaPlc],
    settings: Settings,
    client: Client,
    pool: asyncpg.Pool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    plant, peer = mixer
    plc_id = plant.plcs[0].id
    caplog.set_level(logging.WARNING, logger="ingest.collector")
    ingest = await _ingest(settings, client, plant)
    try:
        collector = ingest.collectors[0]
        await until("samples", lambda: collector.cycles >= 5)
        peer.hold("temp")
        failed_at = datetime.now(UTC) + timedelta(seconds=1)
        await peer.put("temp", 999.0, when=failed_at, status=StatusCodes.BadSensorFailure)
        await until("the bad status counted", lambda: collector.bad_samples.get("temp", 0) >= 1)
        # Uncertain is not good either.
        uncertain_at = failed_at + timedelta(seconds=1)
        await peer.put(
            "temp", 777.0, when=uncertain_at, status=StatusCodes.UncertainSensorNotAccurate
        )
        await until("the uncertain value counted", lambda: collector.bad_samples["temp"] >= 2)
        await peer.put("temp", 61.5, when=failed_at + timedelta(seconds=2))
        await until(
            "the good value after them stored",
            lambda: pool.fetchval(
                "SELECT count(*) FROM samples WHERE plc_id = $1 AND value = 61.5", plc_id
            ),
        )
        not_good = await pool.fetchval(
            "SELECT count(*) FROM samples WHERE plc_id = $1 "
            "AND (value IN (999, 777) OR time IN ($2, $3))",
            plc_id,
            failed_at,
            uncertain_at,
        )
        assert not_good == 0 and collector.bad_samples == {"temp": 2}
        # One line for the episode (bad, then uncertain), naming the node and the status.
        logged = [r.getMessage() for r in caplog.records if "counted as bad quality" in r.msg]
        assert logged == [
            f"PLC {plc_id}: temp: node ns=2;s={plc_id}.temp: status BadSensorFailure; "
            "counted as bad quality"
        ]
        await ingest.manager.write_status()
        status = await pool.fetchval(
            "SELECT bad_samples FROM collector_status WHERE plc_id = $1", plc_id
        )
        assert json.loads(status) == {"temp": 2}
    finally:
        await ingest.stop()


async def test_an_unknown_node_and_a_type_mismatch_are_bad_quality_the_rest_is_collected(
    mixer: tuple[Plant, SimulatedOpcUaPlc],
    settings: Settings,
    client: Client,
    pool: asyncpg.Pool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    served, _peer = mixer
    plc = served.plcs[0]
    raw = plc.model_dump(by_alias=True, exclude_none=True)
    raw["metrics"] += [
        {"name": "ghost", "node_id": "ns=2;s=no.such.node", "type": "double"},
        # The server's Rpm is an Int32; this plant file says double.
        {"name": "rpm_as_double", "browse_path": "2:Line/2:Mixer/2:Rpm", "type": "double"},
    ]
    plant = Plant.model_validate({"plcs": [raw], "actions": []})
    caplog.set_level(logging.WARNING, logger="ingest.collector")
    ingest = await _ingest(settings, client, plant)
    try:
        collector = ingest.collectors[0]
        await until("the good metrics collected", lambda: collector.cycles >= 10)
        assert set(collector.bad_samples) == {"ghost", "rpm_as_double"}
        logged = [r.getMessage() for r in caplog.records if "counted as bad quality" in r.msg]
        assert sum("ns=2;s=no.such.node" in m for m in logged) == 1
        assert sum("int32 on the server, the plant file says double" in m for m in logged) == 1
        await until("the good metrics stored", lambda: ingest.writer.written >= 10)
        stored = await pool.fetch("SELECT DISTINCT metric FROM samples WHERE plc_id = $1", plc.id)
        assert {r["metric"] for r in stored} == {"temp", "rpm"}
        assert collector.consecutive_errors == 0 and ingest.manager.restarts[plc.id] == 0
    finally:
        await ingest.stop()


async def test_after_a_server_restart_the_ingest_resubscribes_and_keeps_what_it_had(
    mixer: tuple[Plant, SimulatedOpcUaPlc],
    settings: Settings,
    client: Client,
    pool: asyncpg.Pool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    plant, peer = mixer
    plc_id = plant.plcs[0].id
    ingest = await _ingest(settings, client, plant)
    count = "SELECT count(*) FROM samples WHERE plc_id = $1 AND time < $2"
    try:
        collector = ingest.collectors[0]
        assert isinstance(collector, OpcUaCollector)
        await until("samples before the restart", lambda: collector.cycles >= 10)
        await peer.set_offline(True)  # the server stops: its sessions and subscriptions go
        down_at = datetime.now(UTC)
        await until("the loss noticed", lambda: collector.consecutive_errors >= 1)
        received = collector.notifications  # every value of the first connection
        assert received >= 10  # at least one value per delivery waited for

        async def all_stored() -> bool:
            return bool(await pool.fetchval(count, plc_id, down_at) == received)

        await until("every value received before the restart stored", all_stored)
        await peer.set_offline(False)  # a fresh server on the same port
        back_at = datetime.now(UTC)
        await until(
            "samples from the restarted server",
            lambda: pool.fetchval(
                "SELECT count(*) FROM samples WHERE plc_id = $1 AND time > $2", plc_id, back_at
            ),
            timeout_s=30,
        )
        assert collector.connections >= 2 and collector.subscribed
        assert collector.consecutive_errors == 0 and ingest.manager.restarts[plc_id] == 0
        assert await pool.fetchval(count, plc_id, down_at) == received  # nothing accepted lost
        # The loss is the collector's WARNING, not a traceback of asyncua's publish loop. If the
        # wait for the writer kept the server down past the third retry, the manager's alert
        # for this PLC is right to fire; any other ERROR is a crash.
        alert = f"ALERT PLC {plc_id} "
        crashes = [
            r
            for r in caplog.records
            if r.levelno >= logging.ERROR
            and not (r.name == "ingest.manager" and r.getMessage().startswith(alert))
        ]
        assert crashes == [], [r.getMessage() for r in crashes]
        assert any("connection lost" in r.getMessage() for r in caplog.records)
    finally:
        await ingest.stop()


async def test_polling_is_the_fallback_when_the_plant_file_says_subscribe_false(
    mixer: tuple[Plant, SimulatedOpcUaPlc],
) -> None:
    served, _peer = mixer
    raw = served.plcs[0].model_dump(by_alias=True, exclude_none=True)
    raw["opcua"] = {"subscribe": False}
    plc = Plc.model_validate(raw)
    got: list[dict[str, float]] = []
    collector = OpcUaCollector(plc, lambda _p, _w, _m, values: got.append(values))
    task = asyncio.create_task(collector.run())
    try:
        await until("polled samples", lambda: len(got) >= 5)
        assert not collector.subscribed and collector.lateness  # the poll cadence ran
        assert {"temp", "rpm"} <= set().union(*got)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_deadband_holds_back_changes_smaller_than_it(
    mixer: tuple[Plant, SimulatedOpcUaPlc],
) -> None:
    served, _peer = mixer
    raw = served.plcs[0].model_dump(by_alias=True, exclude_none=True)
    # temp moves by about 1 (its std) per tick: a deadband of 1000 lets only the first through.
    raw["metrics"][0]["deadband"] = 1000.0
    plc = Plc.model_validate(raw)
    counts = {"temp": 0, "rpm": 0}

    def sink(_p: Plc, _w: datetime, _m: float, values: dict[str, float]) -> None:
        for name in values:
            counts[name] += 1

    collector = OpcUaCollector(plc, sink)
    task = asyncio.create_task(collector.run())
    try:
        await until("rpm changes", lambda: counts["rpm"] >= 20)
        assert counts["temp"] == 1  # the initial value, then nothing within the deadband
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_quiet_server_is_not_stale_its_keep_alives_say_it_is_there(
    mixer: tuple[Plant, SimulatedOpcUaPlc], settings: Settings
) -> None:
    served, _peer = mixer
    raw = served.plcs[0].model_dump(by_alias=True, exclude_none=True)
    for metric in raw["metrics"]:
        metric["deadband"] = 1e9  # after the first values nothing is ever reported again
    plant = Plant.model_validate({"plcs": [raw], "actions": []})
    manager = CollectorManager(plant, lambda _p, _w, _m, _v: None, dsn=settings.pg_dsn)
    collector = manager.collectors[0]
    assert isinstance(collector, OpcUaCollector)
    task = asyncio.create_task(collector.run())
    try:
        await until("the first values", lambda: collector.cycles >= 1)
        first = collector.cycles
        started = time.monotonic()
        # The manager calls a PLC stale after max(3 periods, 5 s) without a sign of life.
        await until("past the staleness window", lambda: time.monotonic() - started > 6.0)
        assert collector.cycles == first  # no data came in the window
        assert manager.state(collector) == "ok"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_reconnect_ends_the_failure_even_when_no_value_arrives_after_it(
    mixer: tuple[Plant, SimulatedOpcUaPlc],
) -> None:
    served, peer = mixer
    raw = served.plcs[0].model_dump(by_alias=True, exclude_none=True)
    raw["metrics"] = [{"name": "ghost", "node_id": "ns=2;s=no.such.node", "type": "double"}]
    plc = Plc.model_validate(raw)
    collector = OpcUaCollector(plc, lambda _p, _w, _m, _v: None, max_backoff_s=1.0)
    task = asyncio.create_task(collector.run())
    try:
        await until("connected", lambda: collector.connections >= 1 and collector.subscribed)
        await peer.set_offline(True)
        await until("the loss counted", lambda: collector.consecutive_errors >= 1)
        await peer.set_offline(False)
        # Nothing is monitored, so only the subscription's keep-alives come: they end it.
        await until("the failure over", lambda: collector.consecutive_errors == 0)
        assert collector.connections >= 2 and collector.bad_samples["ghost"] >= 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- security -----------------------------------------------------------------------------------
@pytest.fixture
def client_cert(tmp_path: Path) -> tuple[Path, Path]:
    return make_certificate(tmp_path / "client", "factorylm-test", "urn:factorylm:test:client")


def _secured(plant: Plant, **opcua: Any) -> Plc:
    raw = plant.plcs[0].model_dump(by_alias=True, exclude_none=True)
    raw.update(opcua.pop("plc", {}))
    raw["opcua"] = opcua
    return Plc.model_validate(raw)


@pytest.mark.parametrize("security", ["sign", "sign_and_encrypt"])
async def test_basic256sha256_with_a_trusted_server_and_a_client_certificate(
    mixer: tuple[Plant, SimulatedOpcUaPlc], client_cert: tuple[Path, Path], security: str
) -> None:
    plant, peer = mixer
    cert, key = client_cert
    plc = _secured(
        plant,
        security=security,
        certificate=str(cert),
        private_key=str(key),
        trust=[str(peer.certificate)],
    )
    driver = OpcUaDriver(plc)
    try:
        values = await driver.read_points(list(plc.metrics))
        assert set(values) == {"temp", "rpm"}
        assert driver.client is not None
        policy = driver.client.security_policy
        assert policy.URI.endswith("#Basic256Sha256")
        mode = (
            ua.MessageSecurityMode.Sign
            if security == "sign"
            else (ua.MessageSecurityMode.SignAndEncrypt)
        )
        assert policy.Mode == mode
    finally:
        await driver.close()


async def test_a_password_is_required_when_the_server_has_users(
    tmp_path: Path, client_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPCUA_TEST_PASSWORD", "s3cret-line-4")
    plant = opcua_plant(
        f"locked-{uuid.uuid4().hex[:6]}",
        free_port(),
        username="operator",
        password_env="OPCUA_TEST_PASSWORD",
    )
    peer = SimulatedOpcUaPlc(plant.plcs[0], cert_dir=tmp_path / "server")
    await peer.start()
    cert, key = client_cert
    try:
        good = OpcUaDriver(
            _secured(plant, security="sign_and_encrypt", certificate=str(cert),
                     private_key=str(key), trust=[str(peer.cert_dir)])
        )  # fmt: skip
        try:
            assert set(await good.read_points(list(plant.plcs[0].metrics))) == {"temp", "rpm"}
        finally:
            await good.close()
        monkeypatch.setenv("OPCUA_TEST_PASSWORD", "wrong")
        bad = OpcUaDriver(plant.plcs[0])
        with pytest.raises(PlcError, match=r"refused the session: .*Bad"):
            await bad.connect()
        await bad.close()
    finally:
        await peer.stop()


async def test_an_untrusted_server_certificate_is_refused_and_named(
    mixer: tuple[Plant, SimulatedOpcUaPlc], client_cert: tuple[Path, Path], tmp_path: Path
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    plant, peer = mixer
    other, _ = make_certificate(tmp_path / "other", "someone-else", "urn:other:server")
    cert, key = client_cert
    plc = _secured(
        plant,
        security="sign_and_encrypt",
        certificate=str(cert),
        private_key=str(key),
        trust=[str(other)],
    )
    served = x509.load_pem_x509_certificate(peer.certificate.read_bytes())
    der = served.public_bytes(serialization.Encoding.DER)
    driver = OpcUaDriver(plc)
    with pytest.raises(PlcError) as refused:
        await driver.connect()
    message = str(refused.value)
    assert "is not trusted" in message and "CN=server" in message
    assert fingerprint(der)[:32] in message and describe_certificate(served) in message
    assert str(other) in message and driver.client is None


async def test_a_server_that_does_not_trust_the_client_certificate_is_named(
    tmp_path: Path, client_cert: tuple[Path, Path]
) -> None:
    plant = opcua_plant(f"strict-{uuid.uuid4().hex[:6]}", free_port())
    known, known_key = make_certificate(tmp_path / "known", "known-client", "urn:known")
    peer = SimulatedOpcUaPlc(plant.plcs[0], cert_dir=tmp_path / "server", client_trust=[known])
    await peer.start()
    cert, key = client_cert
    try:
        driver = OpcUaDriver(
            _secured(plant, security="sign_and_encrypt", certificate=str(cert),
                     private_key=str(key), trust=[str(peer.cert_dir)])
        )  # fmt: skip
        with pytest.raises(PlcError) as refused:
            await driver.connect()
        assert f"does not trust this client's certificate {cert}" in str(refused.value)
        assert "BadCertificateUntrusted" in str(refused.value)
        await driver.close()
        trusted = OpcUaDriver(
            _secured(plant, security="sign_and_encrypt", certificate=str(known),
                     private_key=str(known_key), trust=[str(peer.cert_dir)])
        )  # fmt: skip
        try:
            assert set(await trusted.read_points(list(plant.plcs[0].metrics))) == {"temp", "rpm"}
        finally:
            await trusted.close()
    finally:
        await peer.stop()


# -- writes -------------------------------------------------------------------------------------
async def _write(acts: PlcWriteActivities, req: PlcWriteInput) -> Any:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=req.workflow_id, workflow_run_id="run")
    return await env.run(acts.write_plc_setpoint, req)


async def test_catalog_writes_go_through_the_edge_activity_in_the_nodes_data_type(
    mixer: tuple[Plant, SimulatedOpcUaPlc], pool: asyncpg.Pool
) -> None:
    plant, peer = mixer
    acts = PlcWriteActivities(pool, plant, [])
    wf = f"wf-{uuid.uuid4().hex[:6]}"
    try:
        result = await _write(
            acts, PlcWriteInput(action_id=f"{wf}/a", workflow_id=wf, action="slow_mixer",
                                value=42.5)
        )  # fmt: skip
        assert result.verified and result.value_before == 100 and result.value_read_back == 42.5
        batch = await _write(
            acts, PlcWriteInput(action_id=f"{wf}/b", workflow_id=wf, action="small_batches",
                                value=120)
        )  # fmt: skip
        assert batch.verified and batch.value_read_back == 120
        assert await peer.read("speed_sp") == 42.5
        # What the server holds is of the node's type: an Int32 stays an Int32.
        node, _ = peer._nodes["batch_sp"]
        held = await node.read_data_value()
        assert held.Value is not None and held.Value.VariantType is ua.VariantType.Int32
        rows = await pool.fetch(
            "SELECT action, status, value_before, value_read_back FROM plc_writes "
            "WHERE workflow_id = $1 ORDER BY action",
            wf,
        )
        assert [tuple(r) for r in rows] == [
            ("slow_mixer", "verified", 100.0, 42.5),
            ("small_batches", "verified", 500.0, 120.0),
        ]
    finally:
        await acts.close()


async def test_the_edge_driver_reconnects_on_its_next_call_after_the_server_restarts(
    mixer: tuple[Plant, SimulatedOpcUaPlc],
) -> None:
    plant, peer = mixer
    plc = plant.plcs[0]
    driver = OpcUaDriver(plc)
    try:
        await driver.read_points(list(plc.setpoints))
        await peer.set_offline(True)
        await until("the loss noticed", lambda: not driver.connected)
        await peer.set_offline(False)
        # The first request after the restart succeeds: no failed write attempt on a dead
        # client first.
        assert await driver.read_points(list(plc.setpoints)) == {"speed_sp": 100, "batch_sp": 500}
        assert driver.connected
    finally:
        await driver.close()


async def test_a_value_the_nodes_type_cannot_hold_is_refused_before_the_write(
    mixer: tuple[Plant, SimulatedOpcUaPlc],
) -> None:
    plant, peer = mixer
    plc = plant.plcs[0]
    setpoint = plc.setpoint("batch_sp")
    assert setpoint is not None
    driver = OpcUaDriver(plc)
    try:
        with pytest.raises(PlcError, match=r"12\.5 does not fit the node's type int32"):
            await driver.write_point(setpoint, 12.5)
        assert await peer.read("batch_sp") == 500  # unchanged: its power-up value
    finally:
        await driver.close()


# -- browse -------------------------------------------------------------------------------------
async def test_browse_lists_variables_with_types_and_prints_entries_that_collect(
    mixer: tuple[Plant, SimulatedOpcUaPlc],
) -> None:
    plant, _peer = mixer
    plc = plant.plcs[0]
    url = f"opcua://127.0.0.1:{plc.tcp_port}"
    args = argparse.Namespace(
        url=url, path=None, username=None, password_env=None, security="none",
        certificate=None, private_key=None, trust=[], max_nodes=5000,
    )  # fmt: skip
    text = await browse_url(args)
    assert f"4 variables at {normalise_url(url)}" in text  # 2 metrics, 2 setpoints
    assert "2:Line/2:Mixer/2:Rpm" in text and "int32" in text
    assert f"ns=2;s={plc.id}.temp" in text and "double" in text
    # The printed entry, pasted with an id and vendor and with bounds for its setpoints, is a
    # plant file whose points the collector reads.
    pasted = text.split("# Paste into", 1)[1].split("\n", 1)[1]
    pasted = pasted.replace("id: CHANGE-ME", "id: pasted").replace("vendor: CHANGE-ME", "vendor: x")
    pasted = pasted.replace("min: CHANGE-ME", "min: 0").replace("max: CHANGE-ME", "max: 1000")
    entry = yaml.safe_load(pasted)[0]
    metrics = {m["name"]: m for m in entry["metrics"]}
    assert set(metrics) == {"temp", "rpm"}
    assert metrics["temp"]["node_id"] == f"ns=2;s={plc.id}.temp"
    assert (metrics["temp"]["type"], metrics["rpm"]["type"]) == ("double", "int32")
    assert {s["node_id"] for s in entry["setpoints"]} == {
        f"ns=2;s={plc.id}.speed_sp",
        f"ns=2;s={plc.id}.batch_sp",
    }
    pasted_plc = Plant.model_validate({"plcs": [entry]}).plcs[0]
    got: list[dict[str, float]] = []
    collector = OpcUaCollector(pasted_plc, lambda _p, _w, _m, v: got.append(v))
    task = asyncio.create_task(collector.run())
    try:
        await until("samples from the pasted entry", lambda: len(got) >= 3)
        assert collector.bad_samples == {}
        assert {m.name for m in pasted_plc.metrics} >= set().union(*got)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    args.path = "2:Nowhere"
    with pytest.raises(PlcError, match=r"browsing under 2:Nowhere: .*BadNoMatch"):
        await browse_url(args)
