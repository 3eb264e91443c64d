"""Alarm Triage: an actionable checklist for a drift or alarm code, plus the five most similar
past events from vector memory (any vendor) with what happened. When a similar event was
resolved, what worked then leads the checklist."""

from __future__ import annotations

from pydantic import BaseModel, Field
from temporalio import activity

from activities.agents.checklists import alarm_checklist, rules_checklist
from factorylm.llm import CallContext, LlmRouter, StructuredTask
from factorylm.memory import VectorMemory
from factorylm.models.agents import AlarmTriageInput, OutcomeKind, SimilarEvent, TriageResult

# Below this a past event is a different situation, whatever its outcome says.
RELEVANT_SIMILARITY = 0.6

SYSTEM = (
    "You are Alarm Triage, a maintenance assistant for a plant's PLC-driven machines. "
    "Given an alert, past similar events with their outcomes and a starting checklist, write "
    "a short, ordered checklist of concrete steps a technician can do now, cheapest and most "
    "likely first. Never invent measurements. Each step is one imperative sentence."
)


class TriageDraft(BaseModel):
    checklist: list[str] = Field(min_length=3, max_length=8)


def what_worked(similar: list[SimilarEvent]) -> str | None:
    """What the most similar event with a recorded outcome teaches, or None."""
    for event in similar:
        if event.similarity < RELEVANT_SIMILARITY or event.outcome_kind is None:
            continue
        if event.outcome_kind is OutcomeKind.RESOLVED:
            fix = event.action_taken or event.outcome or "see the event"
            return f"Last time this worked: {fix.replace('_', ' ')} — {event.describe()}"
        if event.outcome_kind is OutcomeKind.FALSE_POSITIVE:
            return f"Last time this was a false alarm: check the sensor first — {event.describe()}"
    return None


class AlarmTriage:
    def __init__(self, memory: VectorMemory, router: LlmRouter) -> None:
        self._memory = memory
        self._router = router

    async def _similar(self, req: AlarmTriageInput) -> list[SimilarEvent]:
        if req.event_id is not None:
            return await self._memory.similar_to_event(req.event_id, k=req.k)
        if req.alert is not None:
            return await self._memory.similar_to_text(req.alert.describe(), k=req.k)
        where = f" on {req.plc_id}" if req.plc_id else ""
        return await self._memory.similar_to_text(f"alarm {req.alarm_code}{where}", k=req.k)

    @activity.defn(name="alarm_triage")
    async def alarm_triage(self, req: AlarmTriageInput) -> TriageResult:
        similar = await self._similar(req)
        lead = what_worked(similar)
        if req.alert is not None:
            subject = req.alert.describe()
            rules = rules_checklist(req.alert.metric)
        else:
            assert req.alarm_code is not None
            subject = f"alarm {req.alarm_code}" + (f" on {req.plc_id}" if req.plc_id else "")
            rules = alarm_checklist(req.alarm_code)
        history = "\n".join(f"- {e.describe()}" for e in similar) or "- none stored yet"
        answer = await self._router.structured(
            StructuredTask(
                agent="alarm_triage",
                system=SYSTEM,
                prompt=(
                    f"Alert: {subject}\n\nSimilar past events (most similar first):\n{history}\n\n"
                    f"Starting checklist:\n" + "\n".join(f"- {step}" for step in rules)
                ),
                output=TriageDraft,
                offline=lambda: TriageDraft(checklist=rules),
            ),
            CallContext.current("alarm_triage", req.workflow_id),
        )
        checklist = list(answer.value.checklist)
        if lead is not None:
            # Whatever the model wrote, the plant's own experience comes first.
            checklist.insert(0, lead)
        return TriageResult(
            subject=subject,
            checklist=checklist,
            similar=similar,
            what_worked=lead,
            generated_by=answer.generated_by,
        )
