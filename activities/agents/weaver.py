"""Weaver: the report that assembles the other agents' findings and proposes actions.

Proposals name only catalog actions that apply to the drifting PLC and metric and whose
threshold the drift reached; anything else is rejected as invalid output (and repaired, or
answered by the rules). plan_response checks them again: the Weaver suggests, it never decides.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, Field
from temporalio import activity

from activities.planning import applicable_actions, choose_action
from factorylm.llm import CallContext, LlmRouter, StructuredTask
from factorylm.models.agents import WeaverInput, WeaverReport
from factorylm.models.drift import DriftAlert, ProposedAction
from factorylm.plant import CatalogAction, Plant

SYSTEM = (
    "You are the Weaver, the maintenance copilot's report writer. From the findings of the "
    "Manual Hunter (manual excerpts), Alarm Triage (checklist and similar past events) and the "
    "Watchman (correlated metrics), write a short summary for the technician and propose "
    "actions. Propose only actions from the given catalog list, by exact name, best first, "
    "each with a one-sentence reason grounded in the findings."
)


class DraftProposal(BaseModel):
    action: str
    reason: str = Field(min_length=5)


class WeaverDraft(BaseModel):
    summary: str = Field(min_length=10, max_length=1200)
    findings: list[str] = Field(max_length=8)
    proposals: list[DraftProposal] = Field(max_length=4)


def _reached(alert: DriftAlert, actions: list[CatalogAction]) -> list[CatalogAction]:
    return [a for a in actions if a.min_sigma <= abs(alert.sigma)]


def rules_draft(plant: Plant, req: WeaverInput) -> WeaverDraft:
    alert = req.alert
    findings = []
    if req.watchman is not None:
        findings.append(f"Watchman: {req.watchman.summary}.")
    if req.triage is not None and req.triage.what_worked:
        findings.append(f"Alarm Triage: {req.triage.what_worked}.")
    elif req.triage is not None and req.triage.similar:
        findings.append(
            f"Alarm Triage: most similar past event {req.triage.similar[0].describe()}."
        )
    if req.manuals is not None and req.manuals.excerpts:
        cites = "; ".join(e.citation for e in req.manuals.excerpts)
        findings.append(f"Manual Hunter: see {cites}.")
    proposals = []
    best = choose_action(plant, alert)
    if best is not None:
        proposals.append(DraftProposal(action=best.action, reason=best.reason))
    for action in sorted(
        _reached(alert, applicable_actions(plant, alert)), key=lambda a: -a.min_sigma
    ):
        if best is None or action.name != best.action:
            proposals.append(
                DraftProposal(
                    action=action.name,
                    reason=f"{action.description}; threshold {action.min_sigma:g}σ reached",
                )
            )
    summary = (
        f"{alert.metric} on {alert.plc_id} ({alert.vendor}) is {alert.sigma:+.1f}σ from its "
        f"baseline ({alert.severity.value})."
    )
    return WeaverDraft(summary=summary, findings=findings, proposals=proposals[:4])


def _catalog_check(plant: Plant, alert: DriftAlert) -> tuple[str, Callable[[WeaverDraft], None]]:
    allowed = {a.name: a for a in _reached(alert, applicable_actions(plant, alert))}
    listing = "\n".join(
        f"- {a.name} ({a.policy.value}, from {a.min_sigma:g}σ): {a.description}"
        for a in allowed.values()
    )

    def check(draft: WeaverDraft) -> None:
        unknown = [p.action for p in draft.proposals if p.action not in allowed]
        if unknown:
            raise ValueError(
                f"proposals {unknown} are not allowed; choose only from {sorted(allowed)}"
            )

    return listing or "- (none: propose nothing)", check


def render(req: WeaverInput, draft: WeaverDraft, generated_by: str, offline: bool) -> str:
    alert = req.alert
    lines = [f"## {alert.metric} drift on {alert.plc_id} ({alert.sigma:+.1f}σ)", ""]
    if offline:
        lines.append(
            "_Offline report: written by the rules-based provider (no LLM key configured or "
            "reachable)._"
        )
    else:
        lines.append(f"_Written by {generated_by}._")
    lines += ["", draft.summary, ""]
    if draft.findings:
        lines += ["### Findings", *[f"- {f}" for f in draft.findings], ""]
    if req.triage is not None:
        lines += ["### Checklist", *[f"{i}. {s}" for i, s in enumerate(req.triage.checklist, 1)]]
        if req.triage.similar:
            lines += [
                "",
                "### Similar past events",
                *[f"- {e.describe()}" for e in req.triage.similar],
            ]
        lines.append("")
    if req.watchman is not None:
        lines += ["### Correlated metrics", f"- {req.watchman.summary}", ""]
    if req.manuals is not None and not req.manuals.excerpts and req.manuals.note:
        lines += ["### From the manuals", f"- {req.manuals.note}", ""]
    if req.manuals is not None and req.manuals.excerpts:
        lines.append("### From the manuals")
        for e in req.manuals.excerpts:
            text = e.text if len(e.text) <= 300 else e.text[:297] + "..."
            lines.append(f"- [{e.citation}] {text}")
        lines.append("")
    lines.append("### Proposed actions")
    if draft.proposals:
        lines += [f"- {p.action}: {p.reason}" for p in draft.proposals]
    else:
        lines.append("- none from the catalog applies")
    return "\n".join(lines)


class Weaver:
    def __init__(self, plant: Plant, router: LlmRouter) -> None:
        self._plant = plant
        self._router = router

    @activity.defn(name="weaver_report")
    async def weaver_report(self, req: WeaverInput) -> WeaverReport:
        listing, check = _catalog_check(self._plant, req.alert)
        evidence = [f"Alert: {req.alert.describe()}"]
        if req.watchman is not None:
            evidence.append(f"Watchman: {req.watchman.summary}")
        if req.triage is not None:
            evidence.append("Alarm Triage checklist:\n" + "\n".join(req.triage.checklist))
            evidence += [f"Similar: {e.describe()}" for e in req.triage.similar]
        if req.manuals is not None:
            evidence += [f"Manual [{e.citation}]: {e.text}" for e in req.manuals.excerpts]
        answer = await self._router.structured(
            StructuredTask(
                agent="weaver",
                system=SYSTEM,
                prompt="\n\n".join([*evidence, f"Catalog actions you may propose:\n{listing}"]),
                output=WeaverDraft,
                offline=lambda: rules_draft(self._plant, req),
                check=check,
            ),
            CallContext.current("weaver", req.workflow_id),
        )
        draft = answer.value
        return WeaverReport(
            title=f"{req.alert.metric} drift on {req.alert.plc_id} ({req.alert.sigma:+.1f}σ)",
            summary=draft.summary,
            markdown=render(req, draft, answer.generated_by, answer.offline),
            proposals=[ProposedAction(action=p.action, reason=p.reason) for p in draft.proposals],
            generated_by=answer.generated_by,
            offline=answer.offline,
        )
