"""Response planning: choose what to propose for an event, only from the action catalog.

plan_response is the final gate between the agents and the machine: the Weaver's proposals
are taken, best first, only when they name a catalog action that applies to this PLC and
metric and whose threshold the drift reached; otherwise the rules choose (choose_action).
"""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio import activity

from factorylm.models.drift import (
    ActionProposal,
    DriftAlert,
    PlanResponseInput,
    ProposedAction,
    ResponsePlan,
)
from factorylm.plant import ActionKind, CatalogAction, Plant
from factorylm.roster import load_roster
from factorylm.settings import Settings


def applicable_actions(plant: Plant, alert: DriftAlert) -> list[CatalogAction]:
    """Catalog actions that answer this metric on this PLC, whatever the magnitude."""
    return [
        a
        for a in plant.actions
        if alert.metric in a.metrics and (a.plc is None or a.plc == alert.plc_id)
    ]


def _proposal(action: CatalogAction, reason: str) -> ActionProposal:
    return ActionProposal(
        action=action.name,
        kind=action.kind,
        policy=action.policy,
        description=action.description,
        reason=reason,
        plc_id=action.plc,
        setpoint=action.setpoint,
        value=action.value,
    )


def choose_action(plant: Plant, alert: DriftAlert) -> ActionProposal | None:
    """The catalog action answering this metric with the highest threshold the drift reached."""
    magnitude = abs(alert.sigma)
    candidates = [a for a in applicable_actions(plant, alert) if a.min_sigma <= magnitude]
    if not candidates:
        return None
    best = max(candidates, key=lambda a: a.min_sigma)  # max keeps catalog order on ties
    return _proposal(
        best,
        f"{alert.metric} at {alert.sigma:+.1f}σ reached this action's threshold "
        f"({best.min_sigma:g}σ)",
    )


def gate_proposals(
    plant: Plant, alert: DriftAlert, proposals: list[ProposedAction]
) -> ActionProposal | None:
    """The first suggested action the catalog allows here, else the rules' choice."""
    allowed = {
        a.name: a for a in applicable_actions(plant, alert) if a.min_sigma <= abs(alert.sigma)
    }
    for suggested in proposals:
        action = allowed.get(suggested.action)
        if action is not None:
            return _proposal(action, f"{suggested.reason} (Weaver; catalog threshold reached)")
    return choose_action(plant, alert)


class PlanningActivities:
    def __init__(self, plant: Plant, settings: Settings) -> None:
        self._plant = plant
        self._settings = settings
        self._roster = load_roster(settings)  # invalid: the worker does not start

    @activity.defn(name="plan_response")
    async def plan_response(self, req: PlanResponseInput) -> ResponsePlan:
        proposal = gate_proposals(self._plant, req.alert, list(req.proposals))
        approvers = list(self._settings.approvers)
        chain, page = None, None
        if self._roster is not None:
            # Whoever is on call now: the roster's shift at this moment, in the plant's zone.
            now = datetime.now(UTC)
            action = proposal.action if proposal else None
            chain = self._roster.chain(now, action=action, severity=req.alert.severity.value)
            if proposal is not None and proposal.kind is ActionKind.NOTIFY:
                page = self._roster.page_chain(now, proposal.action)
            approvers = list(dict.fromkeys(s.address for s in chain.steps))
        return ResponsePlan(
            proposal=proposal,
            approvers=approvers,
            chain=list(chain.steps) if chain else [],
            chain_repeat=chain.repeat if chain else 0,
            page_chain=list(page.steps) if page else [],
            page_repeat=page.repeat if page else 0,
            approval_timeout_s=self._settings.approval_timeout_s,
            approval_validity_s=self._settings.approval_validity_s,
            plc_task_queue=self._settings.plc_task_queue,
            outcome_wait_s=self._settings.outcome_wait_hours * 3600,
        )
