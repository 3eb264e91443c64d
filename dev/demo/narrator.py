"""The demo's narrator: after the scripted scenario, one line for everything the product does.

It listens on PostgreSQL's `audit_events` channel (triggers of migration 0020, see
factorylm/channels.py) and reads the row each notification names: alarms raised, cleared,
shelved, suppressed or grouped in a flood (the alarm journal); an alarm handed to its drift
workflow, which starts it or adds the alarm to the open one (the outbox); every message with
its channel (notifications) and its delivery state (outbound_messages); every PLC write with
its read-back; work orders opened; approvals answered. Nothing polls Temporal.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from factorylm.channels import AUDIT_CHANNEL

log = logging.getLogger(__name__)

# The tables the triggers cover and the column their notification names.
_KEYS = {
    "alarm_journal": "id",
    "alarm_outbox": "id",
    "notifications": "id",
    "outbound_messages": "id",
    "plc_writes": "action_id",
    "work_orders": "id",
    "approval_requests": "id",
}
_QUEUE = 10_000  # notifications waiting to be read: bounded, a burst is cut, not buffered forever


def _gist(text: str, limit: int = 160) -> str:
    """A message on one line: its lines joined, cut at `limit` (the heading alone says little:
    'FactoryLM approval needed' — the alarm is on the next line)."""
    line = " | ".join(part.strip() for part in text.strip().splitlines() if part.strip())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _num(value: Any) -> str:
    return "?" if value is None else f"{value:g}"


class Narrator:
    def __init__(self, dsn: str, say: Callable[[str], None]) -> None:
        self._dsn = dsn
        self._say = say
        self._conn: asyncpg.Connection | None = None
        self._reader: asyncpg.Connection | None = None
        self._events: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue(_QUEUE)
        self._task: asyncio.Task[None] | None = None
        self._runs: set[str] = set()  # drift runs already narrated as started
        self._states: dict[str, str] = {}  # outbound message id -> last narrated state
        self.lines = 0
        self.dropped = 0

    async def start(self) -> None:
        self._reader = await asyncpg.connect(self._dsn)
        self._conn = await asyncpg.connect(self._dsn)
        await self._conn.add_listener(AUDIT_CHANNEL, self._on_notify)
        self._task = asyncio.create_task(self._narrate(), name="demo-narrator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for conn in (self._conn, self._reader):
            if conn is not None:
                await conn.close()
        self._conn = self._reader = None

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            event = json.loads(payload)
            item = (str(event["table"]), str(event["op"]), str(event["key"]))
        except (ValueError, KeyError, TypeError):
            log.warning("narrator: unreadable notification %r", payload[:200])
            return
        if item[0] not in _KEYS:
            return
        try:
            self._events.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _narrate(self) -> None:
        while True:
            table, op, key = await self._events.get()
            try:
                line = await self.describe(table, op, key)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
                # ValueError: a key that is not one (anyone may NOTIFY on the channel).
                log.warning("narrator: cannot read %s %r: %s", table, key[:40], exc)
                continue
            if line:
                self.lines += 1
                self._say(line)

    async def describe(self, table: str, op: str, key: str) -> str | None:
        """The line for one audit event (None: nothing worth a line)."""
        assert self._reader is not None
        column = _KEYS[table]
        # The table and column come from _KEYS, never from the payload.
        cast = "::bigint" if column == "id" else ""
        row = await self._reader.fetchrow(
            f"SELECT * FROM {table} WHERE {column} = $1{cast}",
            int(key) if cast else key,
        )
        if row is None:
            return None
        line: str | None = getattr(self, f"_{table}")(op, dict(row))
        return line

    # -- one line per table ------------------------------------------------------------------
    def _alarm_journal(self, _op: str, r: dict[str, Any]) -> str:
        name = f"alarm {r['code']} ({r['metric']} on {r['plc_id']})"
        event = r["event"]
        if event == "raise":
            how = {
                "sent": "sent to its workflow",
                "shelved": "shelved: recorded, not sent",
                "suppressed": "suppressed: its PLC is offline",
                "flood": "in a flood: listed in the grouped message",
            }[r["annunciation"]]
            return f"{name} raised by the {r['detector'] or 'window'} detector — {how}"
        if event == "clear":
            return f"{name} cleared"
        by = f" by {r['actor']}" if r["actor"] else ""
        if event == "chatter":
            return f"{name} is chattering: {r['detail']}"
        return f"{name} {event}d{by}: {r['detail']}"

    def _alarm_outbox(self, _op: str, r: dict[str, Any]) -> str:
        alert = json.loads(r["alert"]) if isinstance(r["alert"], str) else r["alert"]
        code = alert.get("alarm_code") or "?"
        run = r["run_id"] or ""
        if run and run not in self._runs:
            self._runs.add(run)
            return f"workflow {r['workflow_id']} started (run {run[:8]}) for alarm {code}"
        return f"alarm {code} added to the open workflow {r['workflow_id']} as evidence"

    def _notifications(self, _op: str, r: dict[str, Any]) -> str:
        return f"message to {r['recipient']} on {r['channel']}: {_gist(r['body'])!r}"

    def _outbound_messages(self, op: str, r: dict[str, Any]) -> str | None:
        # The text is narrated once, from `notifications`; here only how its delivery goes.
        key, state = str(r["id"]), str(r["state"])
        before = self._states.get(key)
        self._states[key] = state
        if state == before or (op == "insert" and state == "queued"):
            return None
        error = f" (error {r['error_code']})" if r.get("error_code") else ""
        return f"message #{key} to {r['address']} on {r['channel']}: {state}{error}"

    def _plc_writes(self, _op: str, r: dict[str, Any]) -> str:
        who = f", approved by {r['approved_by']}" if r["approved_by"] else ", automatic"
        if r["status"] == "pending":
            return (
                f"PLC write {r['action']}: {_num(r['value_written'])} to "
                f"{r['plc_id']}.{r['target']} requested{who}"
            )
        error = f": {r['error']}" if r["error"] else ""
        return (
            f"PLC write {r['action']}: {_num(r['value_written'])} to {r['plc_id']}.{r['target']} "
            f"{r['status']} (was {_num(r['value_before'])}, read back "
            f"{_num(r['value_read_back'])}){error}"
        )

    def _work_orders(self, _op: str, r: dict[str, Any]) -> str:
        return f"work order {r['id']} opened ({r['priority']}): {r['title']}"

    def _approval_requests(self, _op: str, r: dict[str, Any]) -> str:
        by = f" by {r['answered_by']}" if r["answered_by"] else ""
        return f"approval {r['code']} for {r['action']} to {r['recipient']}: {r['status']}{by}"
