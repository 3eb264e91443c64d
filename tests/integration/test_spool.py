"""Store-and-forward (ingest/spool.py, ingest/writer.py): samples PostgreSQL cannot take wait on
local disk and are backfilled, once, in time order; a torn record, a full spool, an unusable or
shared directory are each handled as an operator would expect; and `factorylm ingest` killed
with SIGKILL during an outage, and restarted before the database is back, loses at most one
fsync interval of samples."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import yaml

from dev.ingest_process import ingest_env, start_ingest
from dev.simulator.modbus import SimulatedModbusPlc
from factorylm.settings import Settings
from helpers import SwitchableProxy, plant_with_free_ports, until
from ingest.spool import Spool, SpoolError
from ingest.writer import BatchWriter

T0 = datetime(2026, 11, 21, 8, tzinfo=UTC)


def samples(plc: str, n: int, start: int = 0) -> list[tuple[datetime, str, str, float]]:
    return [
        (T0 + timedelta(milliseconds=i), plc, ("vibration", "temp")[i % 2], float(i))
        for i in range(start, start + n)
    ]


def drain(spool: Spool) -> list[tuple[datetime, str, str, float]]:
    """Everything spooled, oldest first, as a backfill reads it (segment by segment)."""
    out = []
    while records := list(spool.next_records(10_000)):
        for record in records:
            out.extend(record.samples)
            spool.mark_done(record)
    return out


def test_samples_round_trip_to_the_microsecond_and_keys_are_written_once_a_segment(
    tmp_path: Path,
) -> None:
    batch = [
        (datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "press-1", "vibration", -1.5e-300),
        (datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "préss-2", "temp °C", 42.0),
        (datetime(2026, 1, 2, 3, 4, 5, 678902, tzinfo=UTC), "press-1", "vibration", 7.25),
    ]
    spool = Spool(tmp_path)
    for _ in range(10):
        spool.append(batch)
    # The keys once (a K record: 12 header + 1 kind + 4 count + 2 × (2 + 7 + 2 + 9 bytes), one
    # of them 'é' and one '°' in UTF-8: +2), then ten P records of 12 + 1 + 4 + 3 × 18 bytes.
    assert spool.bytes == (12 + 1 + 4 + (2 + 7 + 2 + 9) + (2 + 8 + 2 + 8)) + 10 * (12 + 5 + 54)
    spool.close()
    reopened = Spool(tmp_path)  # the key table is read back from the segment
    assert drain(reopened) == batch * 10
    reopened.close()


def test_a_torn_record_at_the_end_is_cut_off_and_the_whole_ones_are_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(3):
        spool.append(samples("torn", 10, start=10 * i))
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    whole = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(b"FLMS\x00\x01\x00\x00garbage")  # a header and a part of its payload
    reopened = Spool(tmp_path)
    assert segment.stat().st_size == whole
    assert drain(reopened) == samples("torn", 30)
    reopened.close()


def test_a_full_spool_drops_its_oldest_segment_keeps_the_newest_and_counts(
    tmp_path: Path,
) -> None:
    # Records of 100 samples (~1.8 kB), segments of ~4 kB, 10 kB in all.
    spool = Spool(tmp_path, max_bytes=10_000, segment_bytes=4_000)
    for i in range(12):
        spool.append(samples("full", 100, start=100 * i))
    assert spool.bytes <= 10_000
    kept = drain(spool)
    assert spool.dropped > 0
    # The newest samples, contiguous up to the last one; exactly the older rest is counted.
    assert kept == samples("full", 1200 - spool.dropped, start=spool.dropped)
    spool.close()


def test_a_spool_directory_that_cannot_be_used_or_is_in_use_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match=f"{blocker}/spool is not usable"):
        Spool(blocker / "spool")
    first = Spool(tmp_path / "spool")
    with pytest.raises(SpoolError, match="in use by another ingest process"):
        Spool(tmp_path / "spool")
    first.close()
    Spool(tmp_path / "spool").close()  # free again once the first is closed


async def test_an_outage_goes_to_disk_and_is_backfilled_once_in_time_order(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    proxy = SwitchableProxy(settings.pg_port)
    await proxy.start()
    via_proxy = settings.model_copy(update={"pg_port": proxy.port})
    spool = Spool(tmp_path / "spool", fsync_interval_s=0.05)
    writer = BatchWriter(
        via_proxy.pg_dsn, max_rows=100, max_delay_s=0.05, max_backoff_s=0.2, spool=spool
    )
    writer.start()
    try:
        batch = samples("spool-a", 3000)
        writer.add(batch[:500])
        await until("500 rows written", lambda: writer.written == 500)
        proxy.cut()
        writer.add(batch[500:600])
        await until("the writer to spool the outage", lambda: spool.pending_samples() == 100)
        for i in range(600, 2500, 100):  # polls arriving during the outage
            writer.add(batch[i : i + 100])
        assert writer.pending == 0 and spool.pending_samples() == 2000
        proxy.up = True
        writer.add(batch[2500:])  # live, once PostgreSQL answers again (or spooled until then)
        await until("the spool backfilled", lambda: spool.empty() and writer.pending == 0)
        await until(
            "every row in the table",
            lambda: writer.written + writer.backfilled >= 3000,
        )
    finally:
        await writer.stop()
        await proxy.close()
    rows = await pool.fetch("SELECT value FROM samples WHERE plc_id = 'spool-a' ORDER BY time")
    assert [r["value"] for r in rows] == [float(i) for i in range(3000)]  # each once
    assert writer.dropped == 0 and spool.dropped == 0
    assert writer.backfilled >= 1900
    # Fully backfilled segments are gone but the one still open.
    assert len(list((tmp_path / "spool").glob("*.seg"))) <= 1


async def test_ingest_killed_during_an_outage_loses_at_most_one_fsync_interval(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    plant, path = plant_with_free_ports(tmp_path)
    raw = yaml.safe_load(path.read_text())
    plc_id = f"spool-kill-{os.getpid()}"
    raw["plcs"] = [raw["plcs"][0] | {"id": plc_id, "poll_interval_ms": 50}]
    raw["actions"] = []
    path.write_text(yaml.safe_dump(raw))
    metrics = len(raw["plcs"][0]["metrics"])
    sim = SimulatedModbusPlc(plant.plcs[0].model_copy(update={"id": plc_id}))
    await sim.start()
    proxy = SwitchableProxy(settings.pg_port)
    await proxy.start()
    fsync_s = 1.0
    env = ingest_env(
        settings,
        path,
        pg_port=proxy.port,
        spool_enabled="true",
        spool_dir=str(tmp_path / "spool"),
        spool_fsync_s=str(fsync_s),
    )

    async def start() -> asyncio.subprocess.Process:
        return await start_ingest(env)

    async def stored() -> int:
        n: int = await pool.fetchval("SELECT count(*) FROM samples WHERE plc_id = $1", plc_id)
        return n

    def spooled_bytes() -> int:
        return sum(p.stat().st_size for p in (tmp_path / "spool").glob("*.seg"))

    first = await start()
    second: asyncio.subprocess.Process | None = None
    try:
        await until("the first samples stored", stored, timeout_s=60)
        proxy.cut()
        # Ten seconds of outage on disk (80 samples/s at 50 ms × 4 metrics, 18 B each).
        await until("10 s of samples spooled", lambda: spooled_bytes() > 10 * 80 * 18, timeout_s=60)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        killed_at = datetime.now(UTC)
        polls_before_kill = sim.requests_answered
        # The edge reboots while the database is still away: it collects into the same spool.
        at_restart = spooled_bytes()
        second = await start()
        await until(
            "the restarted ingest to spool 2 s more",
            lambda: spooled_bytes() > at_restart + 2 * 80 * 18,
            timeout_s=60,
        )
        assert second.returncode is None, "the ingest did not start with the database away"
        proxy.up = True

        spool_id = (tmp_path / "spool" / "spool.id").read_text().strip()

        async def spool_drained() -> bool:
            # Backfilled segments are deleted; the last one is kept, wholly in PostgreSQL.
            segments = sorted((tmp_path / "spool").glob("*.seg"))
            done = await pool.fetchval(
                "SELECT upto FROM ingest_spool_progress WHERE spool_id = $1 AND segment = $2",
                spool_id,
                int(segments[-1].stem),
            )
            return len(segments) == 1 and done == segments[-1].stat().st_size

        await until(
            "the second ingest to backfill the first one's spool", spool_drained, timeout_s=120
        )
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
        await proxy.close()
        await sim.stop()
    duplicates = await pool.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM samples WHERE plc_id = $1 "
        "GROUP BY time, metric HAVING count(*) > 1) d",
        plc_id,
    )
    assert duplicates == 0  # nothing backfilled twice
    # Every poll the first ingest made is a sample per metric; at most one fsync interval's
    # worth (and the poll in flight at the kill) may be missing.
    from_first = await pool.fetchval(
        "SELECT count(*) FROM samples WHERE plc_id = $1 AND time <= $2", plc_id, killed_at
    )
    lost = polls_before_kill * metrics - from_first
    fsync_window = fsync_s / 0.05 * metrics
    assert 0 <= lost <= fsync_window + metrics, (lost, fsync_window)
