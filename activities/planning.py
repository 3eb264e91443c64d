"""Response planning: choose what to propose for an event, only from the action catalog."""

from __future__ import annotations

from temporalio import activity

from factorylm.models import ActionProposal, DriftAlert, PlanResponseInput, ResponsePlan
from factorylm.plant import CatalogAction, Plant
from factorylm.settings import Settings


def choose_action(plant: Plant, alert: DriftAlert) -> ActionProposal | None:
    """The catalog action answering this metric with the highest threshold the drift reached."""
    magnitude = abs(alert.sigma)
    candidates: list[CatalogAction] = [
        a
        for a in plant.actions
        if alert.metric in a.metrics
        and a.min_sigma <= magnitude
        and (a.plc is None or a.plc == alert.plc_id)
    ]
    if not candidates:
        return None
    best = max(candidates, key=lambda a: a.min_sigma)  # max keeps catalog order on ties
    return ActionProposal(
        action=best.name,
        kind=best.kind,
        policy=best.policy,
        description=best.description,
        reason=(
            f"{alert.metric} at {alert.sigma:+.1f}σ reached this action's threshold "
            f"({best.min_sigma:g}σ)"
        ),
        plc_id=best.plc,
        setpoint=best.setpoint,
        value=best.value,
    )


class PlanningActivities:
    def __init__(self, plant: Plant, settings: Settings) -> None:
        self._plant = plant
        self._settings = settings

    @activity.defn(name="plan_response")
    async def plan_response(self, req: PlanResponseInput) -> ResponsePlan:
        return ResponsePlan(
            proposal=choose_action(self._plant, req.alert),
            approvers=list(self._settings.approvers),
            approval_timeout_s=self._settings.approval_timeout_s,
            plc_task_queue=self._settings.plc_task_queue,
        )
