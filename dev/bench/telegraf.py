"""`ingest_vs_telegraf`: FactoryLM's ingest and Telegraf polling the same simulated plant.

The plant: 100 Modbus TCP devices with 20 holding registers each and 3 S7 PLCs with 4 REALs,
at 250 ms, served by `factorylm simulate` in its own process. Each side runs alone, in
alternating rounds, and writes to the same PostgreSQL: FactoryLM through its ingest (the
production defaults: drift detection on, the spool on) into `samples`, Telegraf (a custom build
with only `inputs.modbus`, `inputs.s7comm` and `outputs.postgresql`, scripts/install-telegraf.sh)
into tables of its own in a `telegraf` schema, its configuration generated from the same plant
description.

Per side, over each round's measured window: samples stored per second, CPU seconds per million
samples of the collecting process alone (utime + stime from /proc/<pid>/stat), its peak RSS,
p99 poll jitter (how far each stored sample's interval to the one before it is from the poll
interval: the same measure for both, taken from what each stored), and samples lost (expected
polls × points − stored). Beside them, the floor: the same reads by bare pymodbus and snap7
clients (no decode, no storage), CPU per million values.

value = FactoryLM's CPU per million samples, anchor = Telegraf's, ratio = value / anchor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from dev.bench.ingest import _cleanup, _Simulator
from dev.fakes.server import free_port
from dev.ingest_process import ingest_env, start_ingest
from factorylm.plant import Plant
from factorylm.settings import PROJECT_ROOT, Settings

DEVICES, REGISTERS, S7_PLCS, INTERVAL_MS = 100, 20, 3, 250
WARMUP_S, MEASURE_S, ROUNDS = 10.0, 30.0, 3
TAG = "bench-vs"
_TICK = os.sysconf("SC_CLK_TCK")


def bench_plant() -> Plant:
    modbus_metrics = [
        {"name": f"r{r}", "register": r, "type": "u16", "baseline": {"mean": 1000, "std": 10}}
        for r in range(REGISTERS)
    ]
    plcs: list[dict[str, Any]] = [
        {
            "id": f"{TAG}-mb-{i:03d}",
            "vendor": "generic_modbus",
            "protocol": "modbus_tcp",
            "port": free_port(),
            "poll_interval_ms": INTERVAL_MS,
            "metrics": modbus_metrics,
        }
        for i in range(DEVICES)
    ]
    s7_metrics = [
        {
            "name": f"v{i}",
            "db": 1,
            "offset": 4 * i,
            "type": "real",
            "baseline": {"mean": 50.0, "std": 1.0},
        }
        for i in range(4)
    ]
    for i in range(S7_PLCS):
        plcs.append(
            {
                "id": f"{TAG}-s7-{i}",
                "vendor": "siemens_s7",
                "protocol": "s7",
                "port": free_port(),
                "rack": 0,
                "slot": 1,
                "poll_interval_ms": INTERVAL_MS,
                "metrics": s7_metrics,
            }
        )
    return Plant.model_validate({"name": TAG, "plcs": plcs})


_S7_TYPES = {"real": "R", "int": "I", "dint": "DI"}


def telegraf_config(plant: Plant, settings: Settings) -> str:
    """Telegraf's TOML for the plant: one input per PLC at its poll interval, one output into
    the `telegraf` schema of the same database. Both sides buffer as much and flush as often."""
    lines = [
        "[agent]",
        f'  interval = "{INTERVAL_MS}ms"',
        "  round_interval = true",
        "  metric_batch_size = 5000",
        "  metric_buffer_limit = 1000000",
        '  flush_interval = "1s"',
        '  flush_jitter = "0s"',
        '  precision = "1us"',
        "  omit_hostname = true",
        "",
        "[[outputs.postgresql]]",
        f'  connection = "host={settings.pg_host} port={settings.pg_port} '
        f'user={settings.pg_user} dbname={settings.pg_database} sslmode=disable"',
        '  schema = "telegraf"',
        '  timestamp_column_type = "timestamp with time zone"',
        "",
    ]
    for plc in plant.plcs:
        if plc.protocol == "modbus_tcp":
            registers = ",\n".join(
                f'    {{ name = "{m.name}", byte_order = "AB", data_type = "UINT16", '
                f"scale = 1.0, address = [{m.address}] }}"
                for m in plc.metrics
            )
            lines += [
                "[[inputs.modbus]]",
                f'  name = "{plc.id}"',
                f"  slave_id = {plc.device_id}",
                '  timeout = "1s"',
                f'  controller = "tcp://{plc.host}:{plc.tcp_port}"',
                '  configuration_type = "register"',
                f"  holding_registers = [\n{registers}\n  ]",
                "",
            ]
        elif plc.protocol == "s7":
            fields = ", ".join(
                f'{{ name = "{m.name}", address = "DB{m.db}.{_S7_TYPES[m.type]}{m.offset}" }}'
                for m in plc.metrics
            )
            lines += [
                "[[inputs.s7comm]]",
                f'  server = "{plc.host}:{plc.tcp_port}"',
                f"  rack = {plc.rack}",
                f"  slot = {plc.slot}",
                '  timeout = "1s"',
                "  [[inputs.s7comm.metric]]",
                '    name = "s7comm"',
                f"    fields = [{fields}]",
                "    [inputs.s7comm.metric.tags]",
                f'      device = "{plc.id}"',
                "",
            ]
    return "\n".join(lines)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _measure(
    proc: asyncio.subprocess.Process, sim_pid: int, count: Any, jitter: Any
) -> dict[str, float]:
    await asyncio.sleep(WARMUP_S)
    assert proc.returncode is None, "the collecting process exited during warm-up"
    t0, cpu0, sim0 = datetime.now(UTC), _cpu_s(proc.pid), _cpu_s(sim_pid)
    m0 = time.monotonic()
    await asyncio.sleep(MEASURE_S)
    t1, cpu1, sim1 = datetime.now(UTC), _cpu_s(proc.pid), _cpu_s(sim_pid)
    elapsed = time.monotonic() - m0
    rss = _peak_rss_mb(proc.pid)
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 60)
    stored = await count(t0, t1)
    expected = (DEVICES * REGISTERS + S7_PLCS * 4) * elapsed / (INTERVAL_MS / 1000)
    return {
        "stored_per_s": stored / elapsed,
        "cpu_s_per_million": (cpu1 - cpu0) / stored * 1e6 if stored else float("inf"),
        "cpu_cores": (cpu1 - cpu0) / elapsed,
        "peak_rss_mb": rss,
        "jitter_p99_ms": await jitter(t0, t1),
        "lost": max(0.0, expected - stored),
        "simulator_cores": (sim1 - sim0) / elapsed,
    }


async def _telegraf_round(
    binary: Path, config: Path, conn: asyncpg.Connection, sim_pid: int
) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        "--config",
        str(config),
        stdout=subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )

    async def count(t0: datetime, t1: datetime) -> int:
        total = 0
        for table, fields in (("modbus", REGISTERS), ("s7comm", 4)):
            exists = await conn.fetchval("SELECT to_regclass($1)", f"telegraf.{table}")
            if exists:
                rows = await conn.fetchval(
                    f"SELECT count(*) FROM telegraf.{table} WHERE time >= $1 AND time < $2",
                    t0,
                    t1,
                )
                total += rows * fields
        return total

    async def jitter(t0: datetime, t1: datetime) -> float:
        return await _jitter_p99_ms(
            conn,
            "SELECT name AS series, time FROM telegraf.modbus WHERE time >= $1 AND time < $2",
            t0,
            t1,
        )

    return await _measure(proc, sim_pid, count, jitter)


async def _factorylm_round(
    settings: Settings,
    plant_file: Path,
    tmp: Path,
    conn: asyncpg.Connection,
    sim_pid: int,
    address: str,
) -> dict[str, float]:
    env = ingest_env(
        settings.model_copy(update={"temporal_address": address}),
        plant_file,
        spool_dir=str(tmp / f"spool-{time.monotonic_ns()}"),
    )
    log_file = tmp / "ingest.log"
    proc = await start_ingest(env, log_file)

    async def count(t0: datetime, t1: datetime) -> int:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM samples WHERE plc_id LIKE $1 AND time >= $2 AND time < $3",
            f"{TAG}-%",
            t0,
            t1,
        )
        return n

    async def jitter(t0: datetime, t1: datetime) -> float:
        return await _jitter_p99_ms(
            conn,
            "SELECT plc_id AS series, time FROM samples WHERE plc_id LIKE 'bench-vs-mb-%' "
            "AND metric = 'r0' AND time >= $1 AND time < $2",
            t0,
            t1,
        )

    try:
        return await _measure(proc, sim_pid, count, jitter)
    except AssertionError:
        print(log_file.read_text()[-3000:], file=sys.stderr)
        raise


async def _jitter_p99_ms(conn: asyncpg.Connection, rows_sql: str, *args: Any) -> float:
    value = await conn.fetchval(
        f"""
        WITH r AS ({rows_sql}),
        d AS (
            SELECT extract(epoch FROM time - lag(time) OVER (PARTITION BY series ORDER BY time))
                   AS gap
            FROM r
        )
        SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY abs(gap - {INTERVAL_MS / 1000}))
        FROM d WHERE gap IS NOT NULL
        """,
        *args,
    )
    return float(value or 0.0) * 1000


_BARE = """
import asyncio, os, sys, time
import snap7
from pymodbus.client import AsyncModbusTcpClient
modbus_ports = [int(p) for p in sys.argv[1].split(",")]
s7_ports = [int(p) for p in sys.argv[2].split(",")]
period, duration, registers = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
values = 0
async def modbus(port):
    global values
    c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    await c.connect()
    next_at = time.monotonic()
    end = next_at + duration
    while next_at < end:
        r = await c.read_holding_registers(0, count=registers, device_id=1)
        values += len(r.registers)
        next_at += period
        await asyncio.sleep(max(0, next_at - time.monotonic()))
    c.close()
async def s7(port):
    global values
    c = snap7.client.Client()
    await asyncio.to_thread(c.connect, "127.0.0.1", 0, 1, port)
    next_at = time.monotonic()
    end = next_at + duration
    while next_at < end:
        data = await asyncio.to_thread(c.db_read, 1, 0, 16)
        values += len(data) // 4
        next_at += period
        await asyncio.sleep(max(0, next_at - time.monotonic()))
async def main():
    t = os.times()
    await asyncio.gather(*(modbus(p) for p in modbus_ports), *(s7(p) for p in s7_ports))
    u = os.times()
    print(values, (u.user - t.user) + (u.system - t.system))
asyncio.run(main())
"""


async def _bare_reads(plant: Plant) -> dict[str, float]:
    modbus = ",".join(str(p.tcp_port) for p in plant.plcs if p.protocol == "modbus_tcp")
    s7 = ",".join(str(p.tcp_port) for p in plant.plcs if p.protocol == "s7")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _BARE,
        modbus,
        s7,
        str(INTERVAL_MS / 1000),
        str(MEASURE_S),
        str(REGISTERS),
        stdout=asyncio.subprocess.PIPE,
        cwd=PROJECT_ROOT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), MEASURE_S + 120)
    values, cpu = out.split()
    return {"cpu_s_per_million": float(cpu) / int(values) * 1e6, "values": int(values)}


def _telegraf_binary() -> Path:
    done = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "install-telegraf.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"building Telegraf failed:\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip())


def _median(rounds: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


async def ingest_vs_telegraf(settings: Settings) -> dict[str, Any]:
    from dev.bench.drift import temporal_client

    print("[ingest_vs_telegraf] building or finding Telegraf", file=sys.stderr, flush=True)
    binary = await asyncio.to_thread(_telegraf_binary)
    conn = await asyncpg.connect(settings.pg_dsn)
    await conn.execute("DROP SCHEMA IF EXISTS telegraf CASCADE; CREATE SCHEMA telegraf")
    product: list[dict[str, float]] = []
    peer: list[dict[str, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            plant = bench_plant()
            plant_file = tmp / "plant.yaml"
            plant_file.write_text(yaml.safe_dump(plant.model_dump(mode="json", by_alias=True)))
            config = tmp / "telegraf.toml"
            config.write_text(telegraf_config(plant, settings))
            async with temporal_client(settings) as client, _Simulator(plant_file) as sim:
                assert sim.proc is not None
                address = client.service_client.config.target_host
                floor = await _bare_reads(plant)
                for r in range(ROUNDS):
                    for side in ("telegraf", "factorylm"):
                        print(
                            f"[ingest_vs_telegraf] round {r + 1}/{ROUNDS}: {side}",
                            file=sys.stderr,
                            flush=True,
                        )
                        if side == "telegraf":
                            peer.append(await _telegraf_round(binary, config, conn, sim.proc.pid))
                        else:
                            product.append(
                                await _factorylm_round(
                                    settings, plant_file, tmp, conn, sim.proc.pid, address
                                )
                            )
    finally:
        await conn.execute("DROP SCHEMA IF EXISTS telegraf CASCADE")
        await conn.close()
        await _cleanup(settings, TAG)
    value = _median(product, "cpu_s_per_million")
    anchor = _median(peer, "cpu_s_per_million")
    sides = {
        name: {key: round(_median(rounds, key), 3) for key in rounds[0]}
        for name, rounds in (("factorylm", product), ("telegraf", peer))
    }
    return {
        "bench": "ingest_vs_telegraf",
        "value": round(value, 2),
        "unit": "CPU s per million samples stored (FactoryLM ingest, drift on)",
        "anchor": round(anchor, 2),
        "anchor_unit": "CPU s per million samples stored (Telegraf 1.37.2)",
        "ratio": round(value / anchor, 3),
        "factorylm": sides["factorylm"],
        "telegraf": sides["telegraf"],
        "floor_cpu_s_per_million": round(floor["cpu_s_per_million"], 2),
        "plant": f"{DEVICES} Modbus TCP × {REGISTERS} registers + {S7_PLCS} S7 × 4 REAL, "
        f"{INTERVAL_MS} ms",
        "rounds": ROUNDS,
        "measure_s": MEASURE_S,
        "cores": os.cpu_count(),
    }
