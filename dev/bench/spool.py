"""`store_and_forward`: a 120 s central-database outage at 10 000 samples/s, with the ingest
SIGKILLed once in the middle of it and restarted while the database is still away.

The real `factorylm ingest` polls a simulated plant (20 Modbus TCP devices × 50 registers at
100 ms, plus the example plant's S7 and EtherNet/IP PLCs) in its own process, and reaches
PostgreSQL through a TCP proxy that is cut for the outage. Everything else is the shipped
default: the spool on, fsynced every second.

value = samples polled and never stored: per PLC·metric, the slots missing between the outage's
start and the kill (what the kill took from the spool) — goal: at most one fsync interval's
worth (`fsync_window_samples`). backfill_ratio = the backfill's samples/s once the database is
back, over the live rate (goal ≥ 5). disk_bytes_per_sample = the spool's size at its peak over
the samples it held. Anchor: the same outage and kill with the spool off (the memory buffer
only, the ingest restarted once the database is back), and the samples it lost.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import yaml

from dev.bench.drift import temporal_client
from dev.bench.ingest import _bench_plant, _cleanup, _Simulator
from dev.bench.outage import _CutProxy
from dev.ingest_process import ingest_env, start_ingest
from factorylm.settings import Settings

DEVICES, REGISTERS, INTERVAL_MS = 20, 50, 100  # 10 000 samples/s from the Modbus devices
WARMUP_S, OUTAGE_S, KILL_AT_S = 15.0, 120.0, 60.0


async def _wait(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float) -> float:
    """Seconds until `check` holds (a benchmark may poll; it reports what it waited for)."""
    t0 = time.monotonic()
    while not await check():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"store_and_forward: {what} not within {timeout_s:g} s")
        await asyncio.sleep(0.25)
    return time.monotonic() - t0


def _spool_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.seg"))


_GAPS = """
WITH series AS (SELECT * FROM unnest($1::text[], $2::text[]) AS s(plc_id, metric)),
s AS (
    SELECT plc_id, metric, time,
           lead(time) OVER (PARTITION BY plc_id, metric ORDER BY time) AS next
    FROM samples
    WHERE (plc_id, metric) IN (SELECT plc_id, metric FROM series) AND time >= $3 AND time < $4
),
slots AS (
    -- Poll slots missing between each sample and the next: a gap of 1.6 intervals is a late
    -- poll (its next is early), not a missing one; 1.9 intervals and more are.
    SELECT time, next, greatest(floor(extract(epoch FROM next - time) / $5 - 0.9), 0) AS n
    FROM s WHERE next IS NOT NULL
)
SELECT
    -- the gap over the kill: from the last sample before it to the kill ...
    coalesce(sum(least(n, floor(extract(epoch FROM $6 - time) / $5)))
             FILTER (WHERE time < $6 AND next >= $6), 0)::bigint AS before_kill,
    -- ... and from the kill to the restarted ingest's first sample
    coalesce(sum(n - least(n, floor(extract(epoch FROM $6 - time) / $5)))
             FILTER (WHERE time < $6 AND next >= $6), 0)::bigint AS after_kill,
    coalesce(sum(n) FILTER (WHERE NOT (time < $6 AND next >= $6)), 0)::bigint AS elsewhere,
    (SELECT count(*) FROM series) AS series
FROM slots
"""


async def _gaps(
    conn: asyncpg.Connection,
    series: list[tuple[str, str]],
    start: datetime,
    end: datetime,
    kill: datetime,
) -> dict[str, int]:
    """Poll slots in [start, end) without a stored sample, over every Modbus PLC·metric: the
    slots between a series' last sample and the kill are what the kill took (the spool's
    unsynced tail and the poll in flight); from the kill to the next sample, no process was
    polling (the restart); the rest are gaps elsewhere (polls the collectors missed on a
    loaded machine, which their own missed-cycle counters say, or losses)."""
    row = await conn.fetchrow(
        _GAPS,
        [p for p, _ in series],
        [m for _, m in series],
        start,
        end,
        INTERVAL_MS / 1000,
        kill,
    )
    return {k: int(row[k]) for k in ("before_kill", "after_kill", "elsewhere", "series")}


async def _round(settings: Settings, client_address: str, *, spool: bool) -> dict[str, Any]:
    tag = "bench-sf" if spool else "bench-sf-anchor"
    with tempfile.TemporaryDirectory() as tmp:
        plant = _bench_plant(tag, DEVICES, REGISTERS, INTERVAL_MS, Path(tmp))
        plant_file = Path(tmp) / "plant.yaml"
        plant_file.write_text(yaml.safe_dump(plant.model_dump(mode="json", by_alias=True)))
        spool_dir = Path(tmp) / "spool"
        proxy = _CutProxy(settings.pg_port)
        await proxy.start()
        env = ingest_env(
            settings.model_copy(update={"temporal_address": client_address}),
            plant_file,
            pg_port=proxy.port,
            spool_enabled="true" if spool else "false",
            spool_dir=str(spool_dir),
        )

        async def start() -> asyncio.subprocess.Process:
            return await start_ingest(env)

        conn = await asyncpg.connect(settings.pg_dsn)

        async def stored(since: datetime, until: datetime | None = None) -> int:
            n: int = await conn.fetchval(
                "SELECT count(*) FROM samples WHERE plc_id LIKE $1 AND time >= $2 "
                "AND time < coalesce($3, 'infinity'::timestamptz)",
                f"{tag}-%",
                since,
                until,
            )
            return n

        procs: list[asyncio.subprocess.Process] = []
        try:
            async with _Simulator(plant_file):
                procs.append(await start())
                t_start = datetime.now(UTC)
                await _wait("the first samples", lambda: _positive(stored(t_start)), 120)
                await asyncio.sleep(WARMUP_S)
                t_live = datetime.now(UTC)
                await asyncio.sleep(10)
                live_rate = await stored(t_live, datetime.now(UTC)) / 10
                t_cut = datetime.now(UTC)
                proxy.cut()
                print(f"[store_and_forward] {tag}: database cut, {live_rate:.0f} samples/s live")
                peak = 0
                t0 = time.monotonic()
                while time.monotonic() - t0 < KILL_AT_S:
                    await asyncio.sleep(0.5)
                    peak = max(peak, _spool_bytes(spool_dir))
                procs[0].send_signal(signal.SIGKILL)
                await procs[0].wait()
                t_kill = datetime.now(UTC)
                print(f"[store_and_forward] {tag}: ingest SIGKILLed {KILL_AT_S:g} s into it")
                if spool:  # an edge rebooted during the outage; without a spool it cannot start
                    procs.append(await start())
                    size = _spool_bytes(spool_dir)
                    await _wait(
                        "the restarted ingest to spool", lambda: _grew(spool_dir, size), 120
                    )
                while time.monotonic() - t0 < OUTAGE_S:
                    await asyncio.sleep(0.5)
                    peak = max(peak, _spool_bytes(spool_dir))
                t_restore = datetime.now(UTC)
                proxy.up = True
                if not spool:
                    procs.append(await start())
                print(f"[store_and_forward] {tag}: database back after {OUTAGE_S:g} s")
                spooled = 0
                drain_s = reconnect_s = 0.0
                if spool:
                    spool_id = (spool_dir / "spool.id").read_text().strip()

                    async def drained() -> bool:
                        segments = sorted(spool_dir.glob("*.seg"))
                        done = await conn.fetchval(
                            "SELECT upto FROM ingest_spool_progress WHERE spool_id = $1 "
                            "AND segment = $2",
                            spool_id,
                            int(segments[-1].stem),
                        )
                        return len(segments) == 1 and done == segments[-1].stat().st_size

                    before = await stored(t_cut, t_restore)

                    async def backfilling() -> bool:
                        return await stored(t_cut, t_restore) > before

                    reconnect_s = await _wait("the backfill to start", backfilling, 120)
                    drain_s = await _wait("the spool to drain", drained, 600)
                    spooled = await stored(t_cut, t_restore)
                series = [
                    (plc.id, m.name) for plc in plant.plcs if "-mb-" in plc.id for m in plc.metrics
                ]
                gaps = await _gaps(conn, series, t_cut, t_restore, t_kill)
                if not spool:
                    # Nothing of the outage is stored: every slot up to the kill is lost.
                    stored_before_kill = await stored(t_cut, t_kill)
                    expected = len(series) * (t_kill - t_cut).total_seconds() / (INTERVAL_MS / 1000)
                    gaps["before_kill"] = round(expected) - stored_before_kill
                # The restarted ingest's own count of the polls it missed (written on stop),
                # against the gaps in what it stored over its life.
                t_stop = datetime.now(UTC)
                procs[-1].send_signal(signal.SIGTERM)
                await procs[-1].wait()
                second = await _gaps(conn, series, t_kill, t_stop, t_kill)
                missed_reported = await conn.fetchval(
                    "SELECT coalesce(sum(missed_cycles), 0) FROM collector_status "
                    "WHERE plc_id LIKE $1",
                    f"{tag}-mb-%",
                )
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                    await proc.wait()
            await proxy.close()
            await conn.close()
            await _cleanup(settings, tag)
    return {
        "lost": gaps["before_kill"],
        "unpolled": gaps["after_kill"],
        "missed": gaps["elsewhere"],
        "second_gaps": second["elsewhere"],
        "missed_reported": int(missed_reported) * REGISTERS,
        "reconnect_s": reconnect_s,
        "live_rate": live_rate,
        "spooled": spooled,
        "drain_s": drain_s,
        "peak_bytes": peak,
    }


async def _positive(n: Awaitable[int]) -> bool:
    return await n > 0


async def _grew(directory: Path, size: int) -> bool:
    await asyncio.sleep(0)
    return _spool_bytes(directory) > size


async def store_and_forward(settings: Settings) -> dict[str, Any]:
    async with temporal_client(settings) as client:
        address = client.service_client.config.target_host
        product = await _round(settings, address, spool=True)
        anchor = await _round(settings, address, spool=False)
    backfill_rate = product["spooled"] / product["drain_s"] if product["drain_s"] else 0.0
    return {
        "bench": "store_and_forward",
        "value": product["lost"],
        "unit": "samples lost (outage start to the SIGKILL)",
        "anchor": anchor["lost"],
        "anchor_unit": "samples lost with the spool off (memory buffer only), same outage and kill",
        "ratio": round(product["lost"] / anchor["lost"], 6) if anchor["lost"] else None,
        "fsync_window_samples": round(product["live_rate"] * settings.spool_fsync_s),
        # Slots missing elsewhere in the outage (not over the kill) ...
        "gap_samples_elsewhere": product["missed"],
        # ... and, for the restarted ingest over its life, the gaps in what it stored against
        # the polls its collectors counted as missed (a loaded machine), in samples: where the
        # two agree, the gaps are skipped polls, not losses.
        "restarted_gap_samples": product["second_gaps"],
        "restarted_missed_poll_samples": product["missed_reported"],
        "reconnect_s": round(product["reconnect_s"], 1),
        # Slots nobody polled while the killed ingest restarted (a reboot's cost, not a loss).
        "unpolled_while_restarting": product["unpolled"],
        "backfill_ratio": round(backfill_rate / product["live_rate"], 2),
        "backfill_samples_per_s": round(backfill_rate),
        "live_samples_per_s": round(product["live_rate"]),
        "spooled_samples": product["spooled"],
        "drain_s": round(product["drain_s"], 1),
        "disk_bytes_per_sample": round(product["peak_bytes"] / product["spooled"], 1)
        if product["spooled"]
        else None,
        "outage_s": OUTAGE_S,
        "killed_at_s": KILL_AT_S,
        "fsync_s": settings.spool_fsync_s,
        "goal": "value <= fsync_window_samples, backfill_ratio >= 5",
    }
