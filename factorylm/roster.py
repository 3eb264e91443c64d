"""Who is on call: people and their channels, shifts in the plant's time zone, escalation chains.

The roster is its own YAML file (`FACTORYLM_ROSTER_FILE`, kept beside the plant file), not a
section of the plant file: the plant file is the plant engineer's description of machines and
the catalog, checked by the edge before every write and changed rarely and carefully; a roster
changes with every shift swap and holiday, usually by someone else. Separate files keep a rota
edit from touching — or breaking — what the edge trusts.

Without a roster file, `FACTORYLM_APPROVERS` is the roster, as it always was: the first address
is on duty around the clock, the second the backup, each with `FACTORYLM_APPROVAL_TIMEOUT_S` to
answer. Every error names the entry that is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from factorylm.models.messages import EscalationStep
from factorylm.plant import Plant, Site
from factorylm.settings import Settings

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEK_MIN = 7 * 24 * 60
_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
# Limits on a file a person edits: a roster is a few dozen entries, never thousands.
MAX_ROSTER_BYTES = 256 * 1024


class RosterError(ValueError):
    """The roster file is invalid; the message names the file and the entry."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PersonEntry(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name: str = ""
    whatsapp: str | None = None
    sms: str | None = None


class ShiftEntry(_Strict):
    name: str = Field(min_length=1, max_length=64)
    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1)
    start: str = Field(pattern=_HHMM)
    end: str = Field(pattern=_HHMM, description="at or before start: the shift ends next day")
    on_duty: str
    backup: str | None = None


class StepEntry(_Strict):
    notify: str = Field(description="on_duty, backup, or a person's id")
    wait_s: float = Field(default=300.0, gt=0, le=24 * 3600)


class PolicyEntry(_Strict):
    steps: list[StepEntry] = Field(min_length=1, max_length=20)
    repeat: int = Field(default=0, ge=0, le=10, description="times the whole chain runs again")


class EscalationEntry(_Strict):
    default: PolicyEntry | None = None
    severities: dict[Literal["warning", "high", "critical"], PolicyEntry] = Field(
        default_factory=dict
    )
    actions: dict[str, PolicyEntry] = Field(default_factory=dict)


class OnCallEntry(_Strict):
    on_duty: str
    backup: str | None = None


class RosterFile(_Strict):
    timezone: str | None = None
    people: list[PersonEntry] = Field(min_length=1, max_length=500)
    shifts: list[ShiftEntry] = Field(default_factory=list, max_length=500)
    outside_shifts: OnCallEntry | None = Field(
        default=None, description="who is on call when no shift covers the time"
    )
    escalation: EscalationEntry = Field(default_factory=EscalationEntry)


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    whatsapp: str | None  # "whatsapp:+1555…"
    sms: str | None  # "+1555…"

    @property
    def address(self) -> str:
        first = self.whatsapp or self.sms
        assert first is not None  # the loader refuses a person without a channel
        return first

    @property
    def fallback(self) -> str | None:
        """SMS when WhatsApp fails; None when SMS is the only channel (nothing to fall to)."""
        return self.sms if self.whatsapp else None

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(a for a in (self.whatsapp, self.sms) if a)


@dataclass(frozen=True)
class Shift:
    name: str
    spans: tuple[tuple[int, int], ...]  # minutes of the week, [start, end)
    on_duty: str
    backup: str | None


@dataclass(frozen=True)
class Chain:
    steps: tuple[EscalationStep, ...]
    repeat: int


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _spans(entry: ShiftEntry) -> tuple[tuple[int, int], ...]:
    start, end = _minutes(entry.start), _minutes(entry.end)
    length = (end - start) % (24 * 60) or 24 * 60  # end at or before start: into the next day
    spans: list[tuple[int, int]] = []
    for day in entry.days:
        begin = DAYS.index(day) * 24 * 60 + start
        finish = begin + length
        if finish <= WEEK_MIN:
            spans.append((begin, finish))
        else:  # Sunday night into Monday morning
            spans += [(begin, WEEK_MIN), (0, finish - WEEK_MIN)]
    return tuple(spans)


def _at(minute: int) -> str:
    day, rest = divmod(minute, 24 * 60)
    return f"{DAYS[day]} {rest // 60:02d}:{rest % 60:02d}"


class Roster:
    def __init__(
        self,
        people: list[Person],
        shifts: list[Shift],
        outside: tuple[str, str | None] | None,
        policies: EscalationEntry,
        tz: ZoneInfo,
        default_wait_s: float,
    ) -> None:
        self.people = {p.id: p for p in people}
        self.shifts = shifts
        self._outside = outside
        self._policies = policies
        self.tz = tz
        self._default_wait_s = default_wait_s
        self._by_address = {a: p for p in people for a in p.addresses}

    # -- who -------------------------------------------------------------------------------
    def addresses(self) -> frozenset[str]:
        """Every channel address of every person: who may answer FactoryLM."""
        return frozenset(self._by_address)

    def person_at(self, address: str) -> Person | None:
        return self._by_address.get(address)

    def on_call(self, at: datetime) -> tuple[Person, Person | None]:
        """The on-duty person and their backup at `at` (in the roster's time zone)."""
        local = at.astimezone(self.tz)
        minute = local.weekday() * 24 * 60 + local.hour * 60 + local.minute
        for shift in self.shifts:
            if any(start <= minute < end for start, end in shift.spans):
                return self._pair(shift.on_duty, shift.backup)
        assert self._outside is not None  # the loader refuses a week with a gap
        return self._pair(*self._outside)

    def _pair(self, on_duty: str, backup: str | None) -> tuple[Person, Person | None]:
        return self.people[on_duty], self.people[backup] if backup else None

    # -- escalation ------------------------------------------------------------------------
    def chain(
        self, at: datetime, *, action: str | None = None, severity: str | None = None
    ) -> Chain:
        """Whom to ask, in order, for this action or severity: the action's policy, else the
        severity's, else the default one (on duty, then the backup)."""
        p = self._policies
        policy = (
            (p.actions.get(action) if action else None)
            or (p.severities.get(severity) if severity else None)  # type: ignore[call-overload]
            or p.default
            or PolicyEntry(
                steps=[
                    StepEntry(notify="on_duty", wait_s=self._default_wait_s),
                    StepEntry(notify="backup", wait_s=self._default_wait_s),
                ]
            )
        )
        on_duty, backup = self.on_call(at)
        steps: list[EscalationStep] = []
        for step in policy.steps:
            who = {"on_duty": on_duty, "backup": backup}.get(step.notify, None)
            if step.notify not in ("on_duty", "backup"):
                who = self.people[step.notify]
            if who is None:
                continue  # no backup on this shift: the chain goes on without the step
            steps.append(
                EscalationStep(
                    person=who.id, address=who.address, fallback=who.fallback, wait_s=step.wait_s
                )
            )
        return Chain(steps=tuple(steps), repeat=policy.repeat)

    def page_chain(self, at: datetime, action: str) -> Chain:
        """A page for a `notify` action: its own policy when the roster names one, else the
        backup first (the catalog's "page the backup technician"), then the person on duty."""
        if action in self._policies.actions:
            return self.chain(at, action=action)
        on_duty, backup = self.on_call(at)
        order = [p for p in (backup, on_duty) if p is not None]
        return Chain(
            steps=tuple(
                EscalationStep(
                    person=p.id, address=p.address, fallback=p.fallback, wait_s=self._default_wait_s
                )
                for p in order
            ),
            repeat=0,
        )


def _channel(entry: PersonEntry, where: str) -> Person:
    for field, number in (("whatsapp", entry.whatsapp), ("sms", entry.sms)):
        if number is not None and not E164.match(number.removeprefix("whatsapp:")):
            raise RosterError(
                f"{where}: person {entry.id!r}: {field} {number!r} is not an E.164 number "
                "(+ and the country code, e.g. +15550100001)"
            )
    if entry.whatsapp is None and entry.sms is None:
        raise RosterError(f"{where}: person {entry.id!r} has no channel (whatsapp or sms)")
    whatsapp = f"whatsapp:{entry.whatsapp.removeprefix('whatsapp:')}" if entry.whatsapp else None
    sms = entry.sms.removeprefix("sms:") if entry.sms else None
    return Person(id=entry.id, name=entry.name or entry.id, whatsapp=whatsapp, sms=sms)


def _first_gap(shifts: list[Shift]) -> int | None:
    """The first minute of the week no shift covers, or None."""
    covered = sorted(span for shift in shifts for span in shift.spans)
    reach = 0
    for start, end in covered:
        if start > reach:
            return reach
        reach = max(reach, end)
    return reach if reach < WEEK_MIN else None


def parse_roster(data: object, settings: Settings, where: str = "roster") -> Roster:
    try:
        raw = RosterFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        raise RosterError(f"{where}: {loc}: {first['msg']}") from exc
    people: list[Person] = []
    for entry in raw.people:
        if any(p.id == entry.id for p in people):
            raise RosterError(f"{where}: person {entry.id!r} is listed twice")
        people.append(_channel(entry, where))
    known = {p.id for p in people}

    def person(ref: str | None, entry: str) -> None:
        if ref is not None and ref not in known:
            raise RosterError(f"{where}: {entry}: unknown person {ref!r}")

    shifts: list[Shift] = []
    for s in raw.shifts:
        person(s.on_duty, f"shift {s.name!r}")
        person(s.backup, f"shift {s.name!r}")
        shift = Shift(s.name, _spans(s), s.on_duty, s.backup)
        for other in shifts:
            for a0, a1 in shift.spans:
                for b0, b1 in other.spans:
                    if a0 < b1 and b0 < a1:
                        raise RosterError(
                            f"{where}: shift {s.name!r} overlaps shift {other.name!r} "
                            f"at {_at(max(a0, b0))}"
                        )
        shifts.append(shift)
    outside = None
    if raw.outside_shifts is not None:
        person(raw.outside_shifts.on_duty, "outside_shifts")
        person(raw.outside_shifts.backup, "outside_shifts")
        outside = (raw.outside_shifts.on_duty, raw.outside_shifts.backup)
    elif (gap := _first_gap(shifts)) is not None:
        # Found now, not at 3 a.m. on a Sunday when an alarm finds nobody on call.
        raise RosterError(
            f"{where}: nobody is on call at {_at(gap)}: add a shift or an outside_shifts entry"
        )
    policies = raw.escalation
    named = [("default", policies.default)] if policies.default else []
    named += [(f"severity {k!r}", v) for k, v in policies.severities.items()]
    named += [(f"action {k!r}", v) for k, v in policies.actions.items()]
    for name, policy in named:
        for step in policy.steps:
            if step.notify not in ("on_duty", "backup"):
                person(step.notify, f"escalation {name}")
    zone = raw.timezone or settings.plant_timezone
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise RosterError(f"{where}: timezone {zone!r} is not a known time zone") from exc
    return Roster(people, shifts, outside, policies, tz, settings.approval_timeout_s)


def from_approvers(settings: Settings) -> Roster:
    """Today's setting as a roster: the first approver on duty at all hours, the second the
    backup; each address its own person, on its own channel."""
    people = []
    for i, address in enumerate(settings.approvers, start=1):
        wa = address.startswith("whatsapp:")
        whatsapp, sms = (address, None) if wa else (None, address)
        people.append(Person(id=f"approver-{i}", name=address, whatsapp=whatsapp, sms=sms))
    outside = (people[0].id, people[1].id if len(people) > 1 else None) if people else None
    return Roster(
        people,
        [],
        outside,
        EscalationEntry(),
        ZoneInfo(settings.plant_timezone),
        settings.approval_timeout_s,
    )


def load_roster(settings: Settings) -> Roster | None:
    """The configured roster, or the approvers as one; None when neither names anybody."""
    path = settings.roster_file
    if path is None:
        return from_approvers(settings) if settings.approvers else None
    return read_roster(path, settings)


def read_roster(path: Path, settings: Settings) -> Roster:
    try:
        if path.stat().st_size > MAX_ROSTER_BYTES:
            raise RosterError(f"roster {path}: larger than {MAX_ROSTER_BYTES} bytes")
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RosterError(f"roster {path}: cannot be read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise RosterError(f"roster {path}: not valid YAML: {exc}") from exc
    return parse_roster(data, settings, where=f"roster {path}")


# A recipient resolved when the message is sent, not when it was scheduled: a Temporal Schedule
# made on Monday still reaches Thursday's on-duty person (activities/notify.py).
ON_CALL = "roster:on-duty"


def scheduled_recipients(settings: Settings) -> list[str]:
    """Whom a scheduled message (health alerts, the daily summary, reports) goes to."""
    return [ON_CALL] if settings.roster_file is not None else list(settings.approvers)


def approver_addresses(settings: Settings) -> frozenset[str]:
    """Who may answer an approval request: the roster's people (all their channels), and the
    configured approvers (tokens and older deployments name them)."""
    roster = load_roster(settings)
    return frozenset(settings.approvers) | (roster.addresses() if roster else frozenset())


def site_settings(settings: Settings, site: Site) -> Settings:
    """The settings as one site sees them. A site that names its approvers or its roster
    (factorylm/plant.py) has only those: the deployment's own approvers and roster do not
    reach into it, so a person on another site's rota cannot approve this site's writes."""
    if site.approvers is None and site.roster is None:
        return settings
    return settings.model_copy(
        update={"approvers": list(site.approvers or []), "roster_file": site.roster}
    )


def plant_approver_addresses(settings: Settings, plant: Plant) -> frozenset[str]:
    """Everybody who may answer some site's approval requests (the central API's check; each
    request is answerable only by the people it was sent to)."""
    found: frozenset[str] = frozenset()
    for site in plant.sites:
        found |= approver_addresses(site_settings(settings, site))
    return found


def central_approver_addresses(settings: Settings) -> frozenset[str]:
    """Who the central API hears as an approver: every site's (a site may name its own), from
    the plant file. A plant file that does not load leaves the deployment's own: fewer people
    heard, never more."""
    from factorylm.plant import PlantConfigError, load_plant

    try:
        plant = load_plant(settings.plant_file)
    except PlantConfigError:
        return approver_addresses(settings)
    return plant_approver_addresses(settings, plant)
