"""The alarm gate: every drift alarm passes here between the detector and the outbox.

ISA-18.2's alarm management, decided in memory on the ingest loop (no I/O on the alarm's
path) and recorded in the alarm journal (migration 0020) by a writer task:

* every raise gets its point's short code (`A7`), shown first in the messages about it;
* suppression: a PLC whose collector is failing or stale has its metrics' alarms journalled
  as suppressed and not sent: the collector's own alert is the one alarm for a silent PLC;
* shelving: while a person's shelf is open (SHELVE A7 2h, factorylm/alarms.py) the alarm is
  journalled as shelved and starts no workflow, so nothing is sent: ISA-18.2 shelving hides
  the annunciation, not the record. When the shelf ends and the alarm still stands, it is
  annunciated then (its workflow starts);
* flood: above `flood_alarms` alarms within `flood_window_s` on the site, further alarms are
  held and listed in one grouped message every `gather_s` instead of one message each; those
  still standing when the flood is over are handed to their workflows then;
* chattering: an alarm raised more than `chatter_raises` times within `chatter_window_s` is
  journalled once per window as a bad actor ('chatter'); it is still annunciated.

Clears are journalled when the detector no longer holds the point in alarm (the service asks
after each sample batch), so the journal knows which alarms stand.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from factorylm.channels import SHELVES_CHANNEL
from factorylm.db.pool import close_pool
from factorylm.models.alarms import AlarmNoticeInput
from factorylm.models.drift import DriftAlert
from factorylm.plant import Plant
from factorylm.settings import Settings
from factorylm.whatsapp import WHATSAPP_MAX_CHARS, clip
from workflows.alarm_notice import AlarmNoticeWorkflow

log = logging.getLogger(__name__)

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
_JOURNAL_KEPT = 100_000  # rows waiting for the database: bounded, the oldest go first
_INSERT = """INSERT INTO alarm_journal
                 (at, site, plc_id, metric, code, event, annunciation, detector, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"""

Key = tuple[str, str]  # (plc id, metric)


def _site_of(plant: Plant) -> str:
    """Floods count per site: an edge's plant is its one site; one ingest for a whole plant
    of many sites (the demo's `serve`) counts them together."""
    return plant.sites[0].name if len(plant.sites) == 1 else plant.name


@dataclass(frozen=True)
class AlarmConfig:
    site: str = "plant"
    flood_alarms: int = 10  # 0: no flood handling
    flood_window_s: float = 600.0
    gather_s: float = 60.0
    chatter_raises: int = 10  # 0: no chattering detection
    chatter_window_s: float = 3600.0
    recipients: tuple[str, ...] = ()
    notice_task_queue: str = "factorylm"
    tick_s: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings, plant: Plant) -> AlarmConfig:
        return cls(
            site=_site_of(plant),
            flood_alarms=settings.alarm_flood_alarms,
            flood_window_s=settings.alarm_flood_window_s,
            gather_s=settings.alarm_flood_gather_s,
            chatter_raises=settings.alarm_chatter_raises,
            chatter_window_s=settings.alarm_chatter_window_s,
            # The on-duty person, as for the drift workflow's summaries.
            recipients=tuple(settings.approvers[:1]),
            notice_task_queue=settings.task_queue,
        )


@dataclass
class _Shelf:
    code: str
    until: datetime


@dataclass
class _Flood:
    started: datetime
    batch: list[DriftAlert] = field(default_factory=list)
    held: dict[Key, DriftAlert] = field(default_factory=dict)
    messages: int = 0
    gathering: bool = False


class AlarmGate:
    def __init__(
        self,
        dsn: str,
        plant: Plant,
        forward: Callable[[DriftAlert], None],
        *,
        client: Client | None = None,
        config: AlarmConfig | None = None,
        offline: Callable[[str], bool] | None = None,
        alarmed: Callable[[str, str], bool] | None = None,
    ) -> None:
        self._dsn = dsn
        self._forward = forward
        self._client = client
        self.config = config or AlarmConfig(site=_site_of(plant))
        self.offline = offline or (lambda _plc: False)
        self.alarmed = alarmed or (lambda _plc, _metric: True)
        self._points: list[Key] = [(p.id, m.name) for p in plant.plcs for m in p.metrics]
        self._sites = {p.id: p.site for p in plant.plcs}
        self.codes: dict[Key, str] = {}
        self._shelves: dict[Key, _Shelf] = {}
        self._held_shelved: dict[Key, DriftAlert] = {}
        self._active: set[Key] = set()
        self._site_raises: deque[float] = deque()  # loop times of annunciated raises
        self._raises: dict[Key, deque[float]] = {}
        self._chatter_flagged: dict[Key, float] = {}
        self._flood: _Flood | None = None
        # (sequence number, row): the writer removes exactly what it wrote, even when rows
        # were added, or the oldest dropped past the bound, while it was writing.
        self._journal: deque[tuple[int, tuple[Any, ...]]] = deque()
        self._seq = 0
        self.journal_dropped = 0
        self._write_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._side: set[asyncio.Task[None]] = set()
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self.counts: dict[str, int] = {"sent": 0, "shelved": 0, "suppressed": 0, "flood": 0}
        self.flood_messages = 0
        self.notices: deque[AlarmNoticeInput] = deque(maxlen=100)  # the latest, for tests

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(self._dsn, min_size=0, max_size=2, timeout=5)
        await self._load_points()
        await self._load_shelves()
        await self._listen()
        self._tasks = [
            asyncio.create_task(self._writer(), name="alarm-journal"),
            asyncio.create_task(self._ticker(), name="alarm-gate-tick"),
        ]

    async def stop(self) -> None:
        flood = self._flood
        if flood is not None and flood.batch:
            # A grouped message still gathering goes now: stopping must not swallow it.
            batch, flood.batch = flood.batch, []
            flood.messages += 1
            try:
                await asyncio.wait_for(self._send_notice(flood, batch), 5.0)
            except TimeoutError:
                log.error("alarm flood message not sent before stopping: %d alarms", len(batch))
        for task in [*self._tasks, *self._side]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._side, return_exceptions=True)
        self._tasks = []
        try:
            await self._write()  # the last rows get one more chance
        except _DB_ERRORS as exc:
            log.error("alarm journal: %d rows not written: %s", len(self._journal), exc)
        if self._listener is not None:
            try:
                await self._listener.close()
            except _DB_ERRORS:
                pass  # the connection was already gone
            self._listener = None
        if self._pool is not None:
            await close_pool(self._pool, "alarm management")
            self._pool = None

    async def _load_points(self) -> None:
        assert self._pool is not None
        plcs, metrics = [k[0] for k in self._points], [k[1] for k in self._points]
        await self._pool.execute(
            """INSERT INTO alarm_points (plc_id, metric)
               SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING""",
            plcs,
            metrics,
        )
        rows = await self._pool.fetch(
            """SELECT p.plc_id, p.metric, p.code FROM alarm_points p
               JOIN unnest($1::text[], $2::text[]) AS k(plc_id, metric) USING (plc_id, metric)""",
            plcs,
            metrics,
        )
        self.codes = {(r["plc_id"], r["metric"]): r["code"] for r in rows}
        # Which alarms stand, as the journal last saw them: a restart must not forget them.
        standing = await self._pool.fetch(
            """SELECT plc_id, metric FROM (
                   SELECT DISTINCT ON (plc_id, metric) plc_id, metric, event FROM alarm_journal
                   WHERE event IN ('raise', 'clear') AND plc_id = ANY($1::text[])
                   ORDER BY plc_id, metric, id DESC) last WHERE event = 'raise'""",
            sorted({p for p, _ in self._points}),
        )
        self._active |= {(r["plc_id"], r["metric"]) for r in standing} & set(self.codes)

    async def _listen(self) -> None:
        self._listener = await asyncpg.connect(self._dsn, timeout=5)
        await self._listener.add_listener(SHELVES_CHANNEL, self._on_shelves)

    async def _relisten(self) -> None:
        """After the database went away the LISTEN connection is gone, and with it the news
        of shelves: listen again, then reload them (what was missed meanwhile)."""
        if self._listener is not None and not self._listener.is_closed():
            return
        await self._listen()
        await self._load_shelves()
        log.info("alarm shelves: listening again")

    async def _load_shelves(self) -> None:
        assert self._pool is not None
        rows = await self._pool.fetch(
            """SELECT code, plc_id, metric, until FROM alarm_shelves
               WHERE ended_at IS NULL AND until > now()"""
        )
        shelves = {(r["plc_id"], r["metric"]): _Shelf(r["code"], r["until"]) for r in rows}
        ended = set(self._shelves) - set(shelves)
        self._shelves = shelves
        for key in ended:
            self._release_shelved(key)

    def _on_shelves(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        self._spawn(self._reload_shelves())

    async def _reload_shelves(self) -> None:
        try:
            await self._load_shelves()
        except _DB_ERRORS as exc:
            log.warning("alarm shelves not reloaded: %s", exc)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    # -- the alarm's path (synchronous, on the ingest loop) --------------------------------------
    def __call__(self, alert: DriftAlert) -> None:
        key = (alert.plc_id, alert.metric)
        code = self.codes.get(key)
        if code is None:
            # Not a point of the plant file (it has no code): passed on unmanaged.
            self._forward(alert)
            return
        # The code, and the PLC's site where the alarm's maker left it out: every alarm in the
        # outbox names its site (its workflow id and the Web UI's Site attribute carry it).
        site = alert.site or self._sites.get(alert.plc_id, "")
        alert = alert.model_copy(update={"alarm_code": code, "site": site})
        now = asyncio.get_running_loop().time()
        self._active.add(key)
        self._check_chatter(key, code, now)
        detector = alert.detection.detector if alert.detection else "window"
        detail = alert.describe()
        if self.offline(alert.plc_id):
            self._record(key, code, "raise", "suppressed", detector, f"PLC offline; {detail}")
            return
        shelf = self._shelves.get(key)
        if shelf is not None and shelf.until > datetime.now(UTC):
            self._held_shelved[key] = alert
            self._record(key, code, "raise", "shelved", detector, detail)
            return
        window = self.config.flood_window_s
        while self._site_raises and self._site_raises[0] <= now - window:
            self._site_raises.popleft()
        limit = self.config.flood_alarms
        if limit and (self._flood is not None or len(self._site_raises) >= limit):
            self._site_raises.append(now)
            self._hold_in_flood(key, alert)
            self._record(key, code, "raise", "flood", detector, detail)
            return
        self._site_raises.append(now)
        self._record(key, code, "raise", "sent", detector, detail)
        self._forward(alert)

    def samples(self, plc_id: str, metrics: Any) -> None:
        """After a PLC's samples went through the detector: journal the alarms it cleared."""
        if not self._active:
            return
        for metric in metrics:
            key = (plc_id, metric)
            if key in self._active and not self.alarmed(plc_id, metric):
                self._active.discard(key)
                self._held_shelved.pop(key, None)
                if self._flood is not None:
                    self._flood.held.pop(key, None)
                self._record(key, self.codes[key], "clear", None, None, "back to normal")

    def _check_chatter(self, key: Key, code: str, now: float) -> None:
        limit = self.config.chatter_raises
        if not limit:
            return
        window = self.config.chatter_window_s
        times = self._raises.setdefault(key, deque())
        times.append(now)
        while times and times[0] <= now - window:
            times.popleft()
        flagged = self._chatter_flagged.get(key)
        if len(times) > limit and (flagged is None or flagged <= now - window):
            self._chatter_flagged[key] = now
            log.warning("alarm %s %s/%s is chattering: %d raises", code, *key, len(times))
            self._record(
                key,
                code,
                "chatter",
                None,
                None,
                f"{len(times)} raises within {window / 60:g} min (more than {limit}): a bad actor",
            )

    def _record(
        self,
        key: Key,
        code: str,
        event: str,
        annunciation: str | None,
        detector: str | None,
        detail: str,
    ) -> None:
        if annunciation is not None:
            self.counts[annunciation] += 1
        if len(self._journal) >= _JOURNAL_KEPT:
            self._journal.popleft()
            self.journal_dropped += 1
        self._seq += 1
        self._journal.append(
            (
                self._seq,
                (
                    datetime.now(UTC),
                    self.config.site,
                    key[0],
                    key[1],
                    code,
                    event,
                    annunciation,
                    detector,
                    detail[:1000],
                ),
            )
        )
        self._write_now.set()

    # -- shelves ending ----------------------------------------------------------------------
    def _release_shelved(self, key: Key) -> None:
        """A shelf ended: an alarm that still stands is annunciated now (ISA-18.2)."""
        alert = self._held_shelved.pop(key, None)
        if alert is None or key not in self._active or not self.alarmed(*key):
            return
        log.info("alarm %s unshelved while active: sent now", alert.alarm_code)
        self.counts["sent"] += 1
        self._forward(alert)

    async def _expire_shelves(self) -> None:
        now = datetime.now(UTC)
        due = [k for k, s in self._shelves.items() if s.until <= now]
        if not due:
            return
        assert self._pool is not None
        rows = await self._pool.fetch(
            """UPDATE alarm_shelves SET ended_at = until, ended_by = 'expired'
               WHERE ended_at IS NULL AND until <= now() RETURNING code, plc_id, metric"""
        )
        for r in rows:
            key = (r["plc_id"], r["metric"])
            self._record(key, r["code"], "unshelve", None, None, "shelf time ran out")
        for key in due:
            self._shelves.pop(key, None)
            self._release_shelved(key)

    # -- floods ------------------------------------------------------------------------------
    def _hold_in_flood(self, key: Key, alert: DriftAlert) -> None:
        flood = self._flood
        if flood is None:
            flood = self._flood = _Flood(started=datetime.now(UTC))
            log.warning("alarm flood on %s: grouping alarms", self.config.site)
        flood.batch.append(alert)
        flood.held[key] = alert
        if not flood.gathering:
            flood.gathering = True
            self._spawn(self._gather(flood))

    async def _gather(self, flood: _Flood) -> None:
        await asyncio.sleep(self.config.gather_s)
        batch, flood.batch, flood.gathering = flood.batch, [], False
        if batch:
            flood.messages += 1
            await self._send_notice(flood, batch)

    def _flood_text(self, flood: _Flood, batch: list[DriftAlert]) -> str:
        c = self.config
        head = (
            f"FactoryLM alarm flood on {c.site}: more than {c.flood_alarms} alarms within "
            f"{c.flood_window_s / 60:g} min. {len(batch)} alarm(s) listed here instead of one "
            "message each; those still standing when the flood is over start their response "
            "then."
        )
        tail = "Reply SHELVE <code> 2h to shelve one."
        lines: list[str] = []
        room = WHATSAPP_MAX_CHARS - len(head) - len(tail) - 40
        for i, alert in enumerate(batch):
            line = clip(alert.describe(), 160)
            if room - len(line) - 1 < 0:
                lines.append(f"… and {len(batch) - i} more (the alarm journal has them all)")
                break
            lines.append(line)
            room -= len(line) + 1
        return "\n".join([head, *lines, tail])

    async def _send_notice(self, flood: _Flood, batch: list[DriftAlert]) -> None:
        started = flood.started.strftime("%Y%m%dT%H%M%S")
        notice = AlarmNoticeInput(
            dedup_key=f"alarm-flood/{self.config.site}/{started}/{flood.messages}",
            recipients=list(self.config.recipients),
            body=self._flood_text(flood, batch),
        )
        self.notices.append(notice)
        self.flood_messages += 1
        if self._client is None or not notice.recipients:
            log.warning("alarm flood message not sent (no client or recipient): %s", notice.body)
            return
        delay = 1.0
        for attempt in range(1, 11):
            try:
                await self._client.start_workflow(
                    AlarmNoticeWorkflow.run,
                    notice,
                    id=notice.dedup_key.replace("/", "-"),
                    task_queue=self.config.notice_task_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                )
                return
            except Exception as exc:
                log.warning("alarm flood message: attempt %d failed: %s", attempt, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        log.error("alarm flood message not sent after 10 attempts: %s", notice.body)

    def _check_flood_end(self, now: float) -> None:
        flood = self._flood
        if flood is None or flood.gathering:
            return
        while self._site_raises and self._site_raises[0] <= now - self.config.flood_window_s:
            self._site_raises.popleft()
        if len(self._site_raises) > self.config.flood_alarms // 2:
            return  # over when the rate is down to half the threshold: no flapping at its edge
        self._flood = None
        standing = [
            a
            for k, a in flood.held.items()
            if k in self._active and self.alarmed(*k) and k not in self._shelves
        ]
        log.warning(
            "alarm flood on %s over: %d standing alarm(s) go to their workflows",
            self.config.site,
            len(standing),
        )
        for alert in standing:
            self.counts["sent"] += 1
            self._forward(alert)

    async def _ticker(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.config.tick_s)
            # First what needs no database: a flood ends on time during an outage too.
            self._check_flood_end(asyncio.get_running_loop().time())
            try:
                await self._relisten()
                await self._expire_shelves()
                failing = False
            except (*_DB_ERRORS, TimeoutError) as exc:
                if not failing:  # once per outage, not every tick
                    log.warning("alarm shelves not checked (database unavailable): %s", exc)
                failing = True

    # -- the journal -------------------------------------------------------------------------
    async def _writer(self) -> None:
        delay = 0.5
        while True:
            await self._write_now.wait()
            self._write_now.clear()
            try:
                await self._write()
                delay = 0.5
            except _DB_ERRORS as exc:
                log.warning("alarm journal not written (%s); retry in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                self._write_now.set()

    async def _write(self) -> None:
        if not self._journal or self._pool is None:
            return
        batch = list(self._journal)
        rows = [row for _, row in batch]
        try:
            await self._pool.executemany(_INSERT, rows)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError):
            # A row the table refuses would block the journal for good: the others are
            # written one by one, the refused one is logged and dropped.
            for row in rows:
                try:
                    await self._pool.execute(_INSERT, *row)
                except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
                    log.error("alarm journal refused %r: %s", row[2:6], exc)
        last = batch[-1][0]
        while self._journal and self._journal[0][0] <= last:
            self._journal.popleft()
