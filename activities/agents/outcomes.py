"""Outcome feedback: a technician's words about an event become its outcome metadata.

"fixed bearing" -> resolved, action replaced_bearing; "false alarm" -> false positive. The
next similar event's triage then leads with what worked. The rules classify offline; with an
LLM key the model classifies and the rules stay the fallback.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field
from temporalio import activity

from factorylm.llm import CallContext, LlmRouter, StructuredTask
from factorylm.memory import VectorMemory
from factorylm.models.agents import OutcomeKind, OutcomeRecord, RecordOutcomeInput

_FALSE = re.compile(
    r"\b(false (alarm|positive)|nuisance|no fault|nothing (wrong|found)|sensor (glitch|error)"
    r"|spurious|not a real)\b",
    re.IGNORECASE,
)
_UNRESOLVED = re.compile(
    r"\b(not fixed|still|again|recurr\w*|unresolved|no improvement|didn'?t help|"
    r"did not help|waiting for parts|pending)\b",
    re.IGNORECASE,
)
_FIXED = re.compile(
    r"\b(fix(ed)?|replac\w+|repair\w*|swapp?ed|chang(ed|e)|tighten\w*|realign\w*|align\w*|"
    r"lubricat\w*|greas\w*|clean\w*|balanc\w*|reset|resolved|sorted)\b",
    re.IGNORECASE,
)
# (part pattern, verb pattern or None, action name): the first match names the action taken.
_ACTIONS: list[tuple[str, str | None, str]] = [
    (r"bearing", r"lubricat|greas", "lubricated_bearing"),
    (r"bearing", None, "replaced_bearing"),
    (r"bolt|foot|mount|loose", None, "tightened_mounting"),
    (r"coupling|spider", r"align", "realigned_coupling"),
    (r"coupling|spider", None, "replaced_coupling"),
    (r"align", None, "realigned_coupling"),
    (r"belt", r"tension|tighten", "tensioned_belt"),
    (r"belt", None, "replaced_belt"),
    (r"seal", None, "replaced_seal"),
    (r"impeller", None, "replaced_impeller"),
    (r"strainer|filter", None, "cleaned_strainer"),
    (r"fan|cowl|fins", r"clean", "cleaned_cooling"),
    (r"sensor|cable|probe|transmitter", None, "repaired_sensor"),
    (r"balanc", None, "balanced_rotor"),
]


class OutcomeDraft(BaseModel):
    kind: OutcomeKind
    action_taken: str | None = Field(
        default=None, pattern=r"^[a-z][a-z0-9_]*$", description="snake_case, e.g. replaced_bearing"
    )


def _action(text: str) -> str | None:
    for part, verb, name in _ACTIONS:
        if re.search(part, text, re.IGNORECASE) and (
            verb is None or re.search(verb, text, re.IGNORECASE)
        ):
            return name
    return None


def classify_outcome(text: str) -> OutcomeDraft:
    """The rules: false alarm, still broken, or fixed (and how)."""
    if _FALSE.search(text):
        return OutcomeDraft(kind=OutcomeKind.FALSE_POSITIVE, action_taken=None)
    if _UNRESOLVED.search(text):
        return OutcomeDraft(kind=OutcomeKind.UNRESOLVED, action_taken=_action(text))
    if _FIXED.search(text):
        return OutcomeDraft(kind=OutcomeKind.RESOLVED, action_taken=_action(text))
    return OutcomeDraft(kind=OutcomeKind.UNRESOLVED, action_taken=_action(text))


SYSTEM = (
    "Classify a maintenance technician's report about a machine alert: resolved (a fault was "
    "found and fixed), false_positive (nothing was wrong, or the sensor/alarm was at fault "
    "without a machine fault), or unresolved. Name the action taken in snake_case "
    "(e.g. replaced_bearing, tightened_mounting), or null."
)


async def record_outcome(
    memory: VectorMemory, router: LlmRouter, req: RecordOutcomeInput, workflow_id: str | None = None
) -> OutcomeRecord:
    answer = await router.structured(
        StructuredTask(
            agent="outcome",
            system=SYSTEM,
            prompt=f"Technician's report: {req.text!r}",
            output=OutcomeDraft,
            offline=lambda: classify_outcome(req.text),
        ),
        CallContext.current("outcome", workflow_id),
    )
    draft = answer.value
    resolved = draft.kind is OutcomeKind.RESOLVED
    if not await memory.set_outcome(
        req.event_id,
        text=req.text,
        kind=draft.kind,
        action_taken=draft.action_taken,
        resolved=resolved,
    ):
        raise LookupError(f"no drift event {req.event_id}")
    return OutcomeRecord(
        event_id=req.event_id,
        kind=draft.kind,
        action_taken=draft.action_taken,
        resolved=resolved,
        text=req.text,
        generated_by=answer.generated_by,
    )


class OutcomeActivities:
    def __init__(self, memory: VectorMemory, router: LlmRouter) -> None:
        self._memory = memory
        self._router = router

    @activity.defn(name="record_outcome")
    async def record_outcome(self, req: RecordOutcomeInput) -> OutcomeRecord:
        try:
            return await record_outcome(self._memory, self._router, req)
        except LookupError as exc:
            from factorylm.errors import non_retryable

            raise non_retryable("EventNotFound", str(exc)) from exc
