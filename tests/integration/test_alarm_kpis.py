"""The ISA-18.2 alarm KPIs, computed by SQL on the real database from a journal written here
by hand; every expected number below was counted by hand from that journal."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from temporalio.client import Client

from activities.health import HealthActivities
from factorylm.alarms import alarm_kpis
from factorylm.models.health import DailySummaryInput
from helpers import TANK_METRICS, modbus_plant

# Mornings in 2020: no other test writes journal rows that long ago. Each test here writes its
# journal on a day of its own (the KPIs cover the whole database): the one that checks the
# standing alarms exactly on the first, since alarms left standing on a day still stand later.
T0 = datetime(2020, 3, 2, 6, 0, tzinfo=UTC)


def at(minute: float, day: int = 0) -> datetime:
    return T0 + timedelta(days=day, minutes=minute)


async def write_journal(pool: asyncpg.Pool, tag: str, day: int = 0) -> dict[str, str]:
    plc = {c: f"kpi-{tag}-{c}" for c in ("K1", "K2", "K3", "K4", "K5")}
    rows: list[tuple[datetime, str, str, str | None]] = []
    # 06:00–06:10: 12 alarms shown (K1 ×8, K2 ×4) — a flood (more than 10).
    rows += [(at(0.5 * i, day), "K1", "raise", "sent") for i in range(8)]
    rows += [(at(5 + i, day), "K2", "raise", "sent") for i in range(4)]
    rows.append((at(5.5, day), "K1", "chatter", None))
    # 06:10–06:20: 3 shown (K3), 2 while K1 was shelved, 1 suppressed (K4's PLC offline).
    rows += [(at(11 + i, day), "K3", "raise", "sent") for i in range(3)]
    rows += [(at(12, day), "K4", "raise", "suppressed")]
    rows += [(at(16 + i, day), "K1", "raise", "shelved") for i in range(2)]
    rows.append((at(15, day), "K2", "clear", None))
    # 06:20–06:30: one alarm listed in a flood's grouped message (shown); K3 clears.
    rows.append((at(21, day), "K5", "raise", "flood"))
    rows.append((at(25, day), "K3", "clear", None))
    # 06:30–07:00: quiet. After the period (07:05): a raise that must not count.
    rows.append((at(65, day), "K2", "raise", "sent"))
    await pool.executemany(
        """INSERT INTO alarm_journal (at, site, plc_id, metric, code, event, annunciation)
           VALUES ($1, 'kpi', $2, 'm', $3, $4, $5)""",
        [(t, plc[c], f"{c}-{tag}", e, a) for t, c, e, a in rows],
    )
    # K1 shelved 06:15 for 2 h (open at 07:00); K3 shelved and unshelved before 07:00.
    await pool.executemany(
        """INSERT INTO alarm_shelves (code, plc_id, metric, shelved_by, shelved_at, until,
               ended_at, ended_by) VALUES ($1, $2, 'm', 'whatsapp:+15550300009', $3, $4, $5, $6)""",
        [
            (f"K1-{tag}", plc["K1"], at(15, day), at(135, day), None, None),
            (
                f"K3-{tag}",
                plc["K3"],
                at(12, day),
                at(72, day),
                at(20, day),
                "whatsapp:+15550300009",
            ),
        ],
    )
    return plc


async def test_the_alarm_kpis_of_a_known_journal(pool: asyncpg.Pool) -> None:
    tag = uuid.uuid4().hex[:6]
    plc = await write_journal(pool, tag)
    k = await alarm_kpis(pool, at(0), at(60), flood_alarms=10)
    assert k.raised == 19  # 12 + 3 + 1 + 2 + 1
    assert k.annunciated == 16  # 12 + 3 + 1: shelved and suppressed raises are not shown
    assert (k.shelved_raises, k.suppressed, k.in_flood_messages) == (2, 1, 1)
    assert k.per_10_min == 2.67  # 16 over six 10-minute periods
    assert k.peak_10_min == 12
    assert k.flood_pct == 16.7  # one period of six above 10
    assert [(a.code, a.count) for a in k.top] == [
        (f"K1-{tag}", 10),
        (f"K2-{tag}", 4),
        (f"K3-{tag}", 3),
        (f"K4-{tag}", 1),
        (f"K5-{tag}", 1),
    ]
    # Standing at 07:00: K1 (raised since 06:00, never cleared), K4 and K5; K2 and K3 cleared.
    assert [(a.code, a.since) for a in k.standing] == [
        (f"K1-{tag}", at(0)),
        (f"K4-{tag}", at(12)),
        (f"K5-{tag}", at(21)),
    ]
    assert [(a.code, a.until, a.plc_id) for a in k.shelved] == [(f"K1-{tag}", at(135), plc["K1"])]
    assert [(a.code, a.count) for a in k.chattering] == [(f"K1-{tag}", 1)]
    lines = k.as_lines()
    assert lines[0] == (
        "Alarms: 16 shown of 19 raised (2 while shelved, 1 suppressed, 1 in flood messages); "
        "2.67 per 10 min, peak 12, in flood 16.7 % of the time (> 10 per 10 min)"
    )
    assert f"Shelved: K1-{tag} m on {plc['K1']} until 03-02 08:15 by whatsapp:+15550300009" in lines
    assert f"Chattering (bad actors): K1-{tag} m on {plc['K1']} flagged ×1" in lines


async def test_a_threshold_of_three_puts_the_second_period_in_flood_too(
    pool: asyncpg.Pool,
) -> None:
    tag = uuid.uuid4().hex[:6]
    await write_journal(pool, tag, day=1)
    k = await alarm_kpis(pool, at(0, 1), at(60, 1), flood_alarms=2)
    assert k.flood_pct == 33.3  # 12 and 3 are above 2; the third period's 1 is not


async def test_the_daily_summary_carries_the_alarm_kpis(pool: asyncpg.Pool, client: Client) -> None:
    tag = uuid.uuid4().hex[:6]
    plant = modbus_plant([f"daily-{tag}"], TANK_METRICS)
    now = datetime.now(UTC)
    await pool.executemany(
        """INSERT INTO alarm_journal (at, site, plc_id, metric, code, event, annunciation)
           VALUES ($1, 'kpi', $2, 'm', $3, 'raise', 'sent')""",
        [(now - timedelta(minutes=i), f"daily-{tag}", f"D-{tag}") for i in range(1, 4)],
    )
    summary = await HealthActivities(pool, client, plant, "default").daily_summary(
        DailySummaryInput(hours=24, recipients=[])
    )
    assert summary.alarms is not None
    assert summary.alarms.raised >= 3 and summary.alarms.flood_threshold == 10
    assert f"D-{tag}" in [a.code for a in summary.alarms.standing]
    assert "Standing: " in summary.as_text() and f"D-{tag} m on daily-{tag}" in summary.as_text()


async def test_a_period_off_the_10_minute_grid_counts_the_partial_buckets_at_its_ends(
    pool: asyncpg.Pool,
) -> None:
    tag = uuid.uuid4().hex[:6]
    await write_journal(pool, tag, day=2)
    # 06:05–07:05 touches seven buckets (06:00 … 07:00). K1's eight raises before 06:05 and
    # K2's at 07:05 fall outside; K2 ×4 (06:05–06:08), K3 ×3 and K5 ×1 are shown.
    k = await alarm_kpis(pool, at(5, 2), at(65, 2), flood_alarms=3)
    assert (k.annunciated, k.per_10_min, k.peak_10_min) == (8, 1.14, 4)
    assert k.flood_pct == 14.3  # the 06:00 bucket's 4 > 3, one of seven
