"""The Conductor: the one registry of the agents — which activity each is, what it is asked
for an event, what it answers, and which events it is consulted for.

Pure and deterministic, so workflows import it: a drift goes to Manual Hunter, Alarm Triage
and Watchman in parallel, then the Weaver writes the report from their findings. Adding an
agent is its own module under activities/agents/ (an activity class with `from_deps`), its
models in factorylm/models/agents.py and one AgentRoute here (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from activities.agents.alarm_triage import AlarmTriage
from activities.agents.manual_hunter import ManualHunter
from activities.agents.watchman import Watchman
from activities.agents.weaver import Weaver
from factorylm.models.agents import AlarmTriageInput, ManualHunterInput, WatchmanInput
from factorylm.models.base import Model
from factorylm.models.drift import DriftAlert


class EventType(StrEnum):
    DRIFT = "drift"
    ALARM_CODE = "alarm_code"
    PHOTO_FINDING = "photo_finding"


class Agent(StrEnum):
    """Agents by their activity names."""

    MANUAL_HUNTER = "manual_hunter"
    ALARM_TRIAGE = "alarm_triage"
    WATCHMAN = "watchman"
    WEAVER = "weaver_report"


@dataclass(frozen=True)
class AgentAsk:
    """What an agent is asked about: the event as the workflow knows it."""

    workflow_id: str
    event_id: int
    alert: DriftAlert


@dataclass(frozen=True)
class AgentRoute:
    agent: Agent
    activity: Callable[..., Any]  # the activity method, e.g. ManualHunter.manual_hunter
    events: tuple[EventType, ...]  # consulted in parallel for these; () = runs after them
    ask: Callable[[AgentAsk], Model] | None = None  # its input for an event


def manual_query(alert: DriftAlert) -> str:
    """What to look up in the manuals: the symptom, the machine and what moved with it."""
    direction = "rising" if alert.sigma > 0 else "falling"
    query = (
        f"{alert.metric.replace('_', ' ')} {direction} on {alert.plc_id} ({alert.vendor}): "
        "causes, checks and corrective action"
    )
    if alert.related:
        moved = ", ".join(m.replace("_", " ") for m in sorted(alert.related))
        query += f"; also moved: {moved}"
    return query


def watch_window_s(alert: DriftAlert) -> float:
    """Correlations need enough buckets: at least a minute, else the alert's own window."""
    return max(alert.window_seconds, 60.0)


def _watchman_input(ask: AgentAsk) -> WatchmanInput:
    window = watch_window_s(ask.alert)
    return WatchmanInput(
        workflow_id=ask.workflow_id,
        plc_id=ask.alert.plc_id,
        metric=ask.alert.metric,
        end=ask.alert.detected_at,
        window_s=window,
        bucket_s=window / 30,
    )


ROUTES: dict[Agent, AgentRoute] = {
    r.agent: r
    for r in (
        AgentRoute(
            Agent.MANUAL_HUNTER,
            ManualHunter.manual_hunter,
            (EventType.DRIFT, EventType.ALARM_CODE, EventType.PHOTO_FINDING),
            lambda ask: ManualHunterInput(
                workflow_id=ask.workflow_id, query=manual_query(ask.alert)
            ),
        ),
        AgentRoute(
            Agent.ALARM_TRIAGE,
            AlarmTriage.alarm_triage,
            (EventType.DRIFT, EventType.ALARM_CODE),
            lambda ask: AlarmTriageInput(
                workflow_id=ask.workflow_id, event_id=ask.event_id, alert=ask.alert
            ),
        ),
        AgentRoute(Agent.WATCHMAN, Watchman.watchman, (EventType.DRIFT,), _watchman_input),
        # The Weaver reads the others' findings (WeaverInput), so the workflow asks it last.
        AgentRoute(Agent.WEAVER, Weaver.weaver_report, ()),
    )
}


def agents_for(event: EventType) -> tuple[Agent, ...]:
    """The agents consulted in parallel for an event, in the order they are listed."""
    return tuple(a for a, route in ROUTES.items() if event in route.events)
