"""Alarm management after ISA-18.2: shelving by reply, and the alarm KPIs.

Every PLC·metric that can alarm has a short code (`A7`, table `alarm_points`), shown at the
start of every message about its alarm ("Alarm A7: vibration on conveyor-1 …"). A person
shelves it with a WhatsApp reply `SHELVE A7 2h` and brings it back with `UNSHELVE A7`; the
ingest hears of it (NOTIFY alarm_shelves) and, while the alarm is shelved, records its raises
in the journal without annunciating them: no workflow starts, so no message is sent. An alarm
still standing when its shelf ends (unshelved, or its time ran out) is annunciated then.

The KPIs are SQL over the alarm journal (migration 0020): alarms per 10 minutes and the peak
10 minutes, the share of 10-minute periods in flood, the ten most frequent alarms, the
standing ones, the shelved ones and the chattering ones (bad actors).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from factorylm.channels import SHELVES_CHANNEL
from factorylm.models.health import (
    AlarmCount,
    AlarmKpis,
    ShelvedAlarm,
    StandingAlarm,
)

# A code is `A` and the point's number; people type it in either case.
_CODE = r"(?P<code>[Aa]\d{1,9})"
_DURATION = r"(?P<duration>(?:\d{1,5}\s*(?:h|hr|hrs|hours?|m|min|mins|minutes?)\s*){1,2})"
_SHELVE = re.compile(rf"^\s*shelve\s+{_CODE}(?:\s+{_DURATION})?\s*[.!]*\s*$", re.IGNORECASE)
_UNSHELVE = re.compile(rf"^\s*unshelve\s+{_CODE}\s*[.!]*\s*$", re.IGNORECASE)
_WORD = re.compile(r"^\s*(un)?shelve\b", re.IGNORECASE)
_PART = re.compile(r"(\d+)\s*([hm])", re.IGNORECASE)

SHELVE_HELP = (
    "To shelve an alarm reply SHELVE <code> <time>, e.g. SHELVE A7 2h or SHELVE A7 30m; "
    "UNSHELVE A7 brings it back. The code is the one at the start of the alarm's message."
)


@dataclass(frozen=True)
class ShelveCommand:
    code: str
    seconds: float | None  # None: UNSHELVE
    error: str | None = None


def parse_shelve(text: str) -> ShelveCommand | None:
    """`SHELVE A7 2h`, `shelve a7 1h30m`, `UNSHELVE A7` → a command; a message that starts
    with the word but is not one → a command carrying the error; anything else → None."""
    text = text.strip()
    # Bounded: a long message that happens to start with the word is not a command.
    if len(text) > 200 or not _WORD.match(text):
        return None
    if m := _UNSHELVE.match(text):
        return ShelveCommand(code=m["code"].upper(), seconds=None)
    m = _SHELVE.match(text)
    if m is None:
        return ShelveCommand(code="", seconds=None, error=f"Not understood. {SHELVE_HELP}")
    if not m["duration"]:
        return ShelveCommand(
            code=m["code"].upper(),
            seconds=None,
            error=f"For how long? Reply e.g. SHELVE {m['code'].upper()} 2h. Nothing was shelved.",
        )
    seconds = sum(
        int(n) * (3600 if unit.lower() == "h" else 60) for n, unit in _PART.findall(m["duration"])
    )
    if seconds <= 0:
        return ShelveCommand(
            code=m["code"].upper(), seconds=None, error="A shelf lasts at least a minute."
        )
    return ShelveCommand(code=m["code"].upper(), seconds=float(seconds))


def human_duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    hours, rest = divmod(minutes, 60)
    if hours and rest:
        return f"{hours} h {rest} min"
    return f"{hours} h" if hours else f"{rest} min"


async def alarm_reply(
    pool: asyncpg.Pool, sender: str, text: str, max_shelve_s: float
) -> str | None:
    """The answer to a SHELVE/UNSHELVE reply (None: the text is not one). Refusals change
    nothing and say why: an unknown code, an alarm that is not active, a shelf longer than
    the maximum, UNSHELVE of an alarm that is not shelved."""
    command = parse_shelve(text)
    if command is None:
        return None
    if command.error is not None:
        return command.error
    try:
        return await _apply(pool, sender, command, max_shelve_s)
    except asyncpg.UniqueViolationError:
        # Two replies for one alarm at the same moment: the other one's shelf stands.
        return f"Alarm {command.code} was shelved by someone else just now. Nothing was changed."


async def _apply(
    pool: asyncpg.Pool, sender: str, command: ShelveCommand, max_shelve_s: float
) -> str:
    async with pool.acquire() as conn, conn.transaction():
        point = await conn.fetchrow(
            "SELECT plc_id, metric FROM alarm_points WHERE code = $1", command.code
        )
        if point is None:
            return f"There is no alarm {command.code}. Nothing was changed."
        name = f"{command.code} ({point['metric']} on {point['plc_id']})"
        # A shelf whose time ran out while the ingest was not there to close it: closed here,
        # or it would stand in the way of a new one (one open shelf per alarm).
        expired = await conn.fetch(
            """UPDATE alarm_shelves SET ended_at = until, ended_by = 'expired'
               WHERE code = $1 AND ended_at IS NULL AND until <= now() RETURNING id""",
            command.code,
        )
        if expired:
            await _journal(conn, point, command.code, "unshelve", None, "shelf time ran out")
        open_shelf = await conn.fetchrow(
            """SELECT id, until, shelved_by FROM alarm_shelves
               WHERE code = $1 AND ended_at IS NULL AND until > now() FOR UPDATE""",
            command.code,
        )
        if command.seconds is None:
            if open_shelf is None:
                return f"Alarm {name} is not shelved. Nothing was changed."
            await conn.execute(
                "UPDATE alarm_shelves SET ended_at = now(), ended_by = $2 WHERE id = $1",
                open_shelf["id"],
                sender,
            )
            await _journal(conn, point, command.code, "unshelve", sender, "unshelved by reply")
            await conn.execute("SELECT pg_notify($1, $2)", SHELVES_CHANNEL, command.code)
            return (
                f"Alarm {name} is unshelved: its alarms are sent again "
                "(now, if it is still active)."
            )
        if command.seconds > max_shelve_s:
            return (
                f"Alarm {command.code} can be shelved for at most "
                f"{human_duration(max_shelve_s)}, not {human_duration(command.seconds)}. "
                "Nothing was shelved."
            )
        last = await conn.fetchrow(
            """SELECT event, at FROM alarm_journal
               WHERE plc_id = $1 AND metric = $2 AND event IN ('raise', 'clear')
               ORDER BY id DESC LIMIT 1""",
            point["plc_id"],
            point["metric"],
        )
        if last is None or last["event"] != "raise":
            when = f" (it cleared at {last['at']:%H:%M} UTC)" if last is not None else ""
            return (
                f"Alarm {name} is not active{when}: only an active alarm can be shelved. "
                "Nothing was shelved."
            )
        # Shelving again replaces the open shelf: the new time counts from now.
        if open_shelf is not None:
            await conn.execute(
                "UPDATE alarm_shelves SET ended_at = now(), ended_by = $2 WHERE id = $1",
                open_shelf["id"],
                sender,
            )
        until: datetime = await conn.fetchval(
            """INSERT INTO alarm_shelves (code, plc_id, metric, shelved_by, until)
               VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING until""",
            command.code,
            point["plc_id"],
            point["metric"],
            sender,
            command.seconds,
        )
        await _journal(
            conn,
            point,
            command.code,
            "shelve",
            sender,
            f"shelved for {human_duration(command.seconds)}, until {until:%Y-%m-%d %H:%M} UTC",
        )
        await conn.execute("SELECT pg_notify($1, $2)", SHELVES_CHANNEL, command.code)
    return (
        f"Alarm {name} is shelved until {until:%H:%M} UTC ({human_duration(command.seconds)}): "
        f"it is still recorded but not sent. Reply UNSHELVE {command.code} to end it sooner."
    )


async def _journal(
    conn: asyncpg.Connection,
    point: asyncpg.Record,
    code: str,
    event: str,
    actor: str | None,
    detail: str,
) -> None:
    # The site is the one the point's alarms were raised on (its latest journal row).
    site = await conn.fetchval(
        """SELECT site FROM alarm_journal WHERE plc_id = $1 AND metric = $2
           ORDER BY id DESC LIMIT 1""",
        point["plc_id"],
        point["metric"],
    )
    await conn.execute(
        """INSERT INTO alarm_journal (site, plc_id, metric, code, event, actor, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        site or "plant",
        point["plc_id"],
        point["metric"],
        code,
        event,
        actor,
        detail,
    )


# -- KPIs ----------------------------------------------------------------------------------------
# Annunciated alarms are the ones a person was shown: each in its own message ('sent') or in a
# grouped flood message ('flood'). Shelved and suppressed raises are recorded, not shown.
ANNUNCIATED = ("sent", "flood")

# Per fixed 10-minute bucket (epoch-aligned, as Grafana's time_bucket draws them).
_BUCKETS = """
    SELECT time_bucket('10 minutes', at) AS bucket, count(*) AS n FROM alarm_journal
    WHERE event = 'raise' AND annunciation = ANY($3::text[]) AND at >= $1 AND at < $2
    GROUP BY bucket"""


async def alarm_kpis(
    conn: asyncpg.Pool | asyncpg.Connection,
    since: datetime,
    until: datetime,
    *,
    flood_alarms: int,
) -> AlarmKpis:
    """The KPIs over [since, until). Rates are per 10 minutes over the whole period (quiet
    periods count); a period is in flood when more than `flood_alarms` alarms were shown in
    it; standing and shelved alarms are those at `until`."""
    annunciated = list(ANNUNCIATED)
    # The fixed 10-minute buckets the period touches (partial ones at its ends included), so
    # the share in flood never exceeds 100 %.
    first = int(since.timestamp() // 600)
    last = int((until.timestamp() - 1e-6) // 600)
    periods = max(1, last - first + 1)
    counts = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE annunciation = ANY($3::text[])) AS shown,
                  count(*) AS raised,
                  count(*) FILTER (WHERE annunciation = 'shelved') AS shelved,
                  count(*) FILTER (WHERE annunciation = 'suppressed') AS suppressed,
                  count(*) FILTER (WHERE annunciation = 'flood') AS flooded
           FROM alarm_journal WHERE event = 'raise' AND at >= $1 AND at < $2""",
        since,
        until,
        annunciated,
    )
    buckets = await conn.fetchrow(
        f"""SELECT coalesce(max(n), 0) AS peak,
                   count(*) FILTER (WHERE n > $4) AS flooded
            FROM ({_BUCKETS}) b""",
        since,
        until,
        annunciated,
        flood_alarms,
    )
    top = await conn.fetch(
        """SELECT code, plc_id, metric, count(*) AS n FROM alarm_journal
           WHERE event = 'raise' AND at >= $1 AND at < $2
           GROUP BY code, plc_id, metric ORDER BY n DESC, code LIMIT 10""",
        since,
        until,
    )
    # Standing: the point's last raise/clear before `until` is a raise; since its first raise
    # after the clear before it. Per standing point, two index range scans (plc, metric, at).
    standing = await conn.fetch(
        """WITH last AS (
               SELECT DISTINCT ON (plc_id, metric) plc_id, metric, code, event
               FROM alarm_journal WHERE event IN ('raise', 'clear') AND at < $1
               ORDER BY plc_id, metric, at DESC, id DESC)
           SELECT l.code, l.plc_id, l.metric, (
                   SELECT min(j.at) FROM alarm_journal j
                   WHERE j.plc_id = l.plc_id AND j.metric = l.metric AND j.event = 'raise'
                     AND j.at < $1 AND j.at > coalesce((
                         SELECT max(c.at) FROM alarm_journal c
                         WHERE c.plc_id = l.plc_id AND c.metric = l.metric
                           AND c.event = 'clear' AND c.at < $1), '-infinity')) AS since
           FROM last l WHERE l.event = 'raise'""",
        until,
    )
    shelved = await conn.fetch(
        """SELECT code, plc_id, metric, shelved_by, until FROM alarm_shelves
           WHERE shelved_at <= $1 AND until > $1 AND (ended_at IS NULL OR ended_at > $1)
           ORDER BY until, code""",
        until,
    )
    chatter = await conn.fetch(
        """SELECT code, plc_id, metric, count(*) AS n FROM alarm_journal
           WHERE event = 'chatter' AND at >= $1 AND at < $2
           GROUP BY code, plc_id, metric ORDER BY n DESC, code""",
        since,
        until,
    )
    return AlarmKpis(
        raised=counts["raised"],
        annunciated=counts["shown"],
        shelved_raises=counts["shelved"],
        suppressed=counts["suppressed"],
        in_flood_messages=counts["flooded"],
        per_10_min=round(counts["shown"] / periods, 2),
        peak_10_min=buckets["peak"],
        flood_pct=round(100 * buckets["flooded"] / periods, 1),
        flood_threshold=flood_alarms,
        top=[
            AlarmCount(code=r["code"], plc_id=r["plc_id"], metric=r["metric"], count=r["n"])
            for r in top
        ],
        # Longest standing first.
        standing=sorted(
            (
                StandingAlarm(
                    code=r["code"], plc_id=r["plc_id"], metric=r["metric"], since=r["since"]
                )
                for r in standing
            ),
            key=lambda a: (a.since, a.code),
        ),
        shelved=[
            ShelvedAlarm(
                code=r["code"],
                plc_id=r["plc_id"],
                metric=r["metric"],
                by=r["shelved_by"],
                until=r["until"],
            )
            for r in shelved
        ],
        chattering=[
            AlarmCount(code=r["code"], plc_id=r["plc_id"], metric=r["metric"], count=r["n"])
            for r in chatter
        ],
    )
