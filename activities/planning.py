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
from factorylm.roster import Roster, load_roster, site_settings
from factorylm.settings import Settings


def alert_site(plant: Plant, alert: DriftAlert) -> str:
    """The alert's site; an alert recorded before sites names none: its PLC's."""
    if alert.site:
        return alert.site
    plc = plant.plc(alert.plc_id)
    return plc.site if plc is not None else plant.sites[0].name


def applicable_actions(plant: Plant, alert: DriftAlert) -> list[CatalogAction]:
    """The alert's site's catalog actions that answer this metric on this PLC, whatever the
    magnitude: another site's catalog never answers (its edge alone could write it)."""
    site = alert_site(plant, alert)
    return [
        a
        for a in plant.actions
        if a.site == site and alert.metric in a.metrics and (a.plc is None or a.plc == alert.plc_id)
    ]


def _proposal(action: CatalogAction, reason: str) -> ActionProposal:
    return ActionProposal(
        action=action.name,
        kind=action.kind,
        policy=action.policy,
        description=action.description,
        reason=reason,
        site=action.site,
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
        # Each site's approvers and roster (a site may name its own); invalid: the worker
        # does not start.
        self._sites: dict[str, tuple[Settings, Roster | None]] = {}
        for site in plant.sites:
            own = site_settings(settings, site)
            self._sites[site.name] = (own, load_roster(own))

    @activity.defn(name="plan_response")
    async def plan_response(self, req: PlanResponseInput) -> ResponsePlan:
        proposal = gate_proposals(self._plant, req.alert, list(req.proposals))
        site = alert_site(self._plant, req.alert)
        settings, roster = self._sites.get(site, (self._settings, None))
        approvers = list(settings.approvers)
        chain, page = None, None
        if roster is not None:
            # Whoever is on call now: the roster's shift at this moment, in the plant's zone.
            now = datetime.now(UTC)
            action = proposal.action if proposal else None
            chain = roster.chain(now, action=action, severity=req.alert.severity.value)
            if proposal is not None and proposal.kind is ActionKind.NOTIFY:
                page = roster.page_chain(now, proposal.action)
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
            plc_task_queue=self._settings.edge_queue(site),
            outcome_wait_s=self._settings.outcome_wait_hours * 3600,
        )
