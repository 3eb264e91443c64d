"""The Conductor: which agents handle which kind of event, and what each is asked.

Pure and deterministic, so workflows import it: a drift goes to Manual Hunter, Alarm Triage
and Watchman in parallel, then the Weaver writes the report from their findings.
"""

from __future__ import annotations

from enum import StrEnum

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


# The agents that run in parallel for an event; the Weaver always runs after them.
AGENTS_FOR: dict[EventType, tuple[Agent, ...]] = {
    EventType.DRIFT: (Agent.MANUAL_HUNTER, Agent.ALARM_TRIAGE, Agent.WATCHMAN),
    EventType.ALARM_CODE: (Agent.ALARM_TRIAGE, Agent.MANUAL_HUNTER),
    EventType.PHOTO_FINDING: (Agent.MANUAL_HUNTER,),
}


def agents_for(event: EventType) -> tuple[Agent, ...]:
    return AGENTS_FOR[event]


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
