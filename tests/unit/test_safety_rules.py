"""The PLC write safety rules (docs/approvals.md, "The write itself") and the catalog-only proposals, without I/O."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError

from activities.planning import choose_action
from activities.plc_write import same_value, validate_write
from factorylm.models.plc_writes import PlcWriteInput
from factorylm.plant import load_plant
from factorylm.settings import PROJECT_ROOT
from helpers import make_alert as alert

APPROVER = "whatsapp:+15550100001"
PLANT = load_plant(PROJECT_ROOT / "config" / "plant.yaml")


def write(action: str, value: float, approved_by: str | None = None) -> PlcWriteInput:
    return PlcWriteInput(
        action_id="a1", workflow_id="w", action=action, value=value, approved_by=approved_by
    )


def refused(req: PlcWriteInput) -> str:
    with pytest.raises(ApplicationError) as err:
        validate_write(PLANT, req, [APPROVER])
    assert err.value.non_retryable
    return str(err.value.type)


def test_proposal_follows_magnitude() -> None:
    moderate = choose_action(PLANT, alert(2.5, "vibration"))
    severe = choose_action(PLANT, alert(-6.0, "vibration"))
    assert moderate is not None and moderate.action == "reduce_motor_speed_to_60pct"
    assert severe is not None and severe.action == "shutdown_motor"
    assert severe.policy == "approval" and severe.value == 0


def test_no_proposal_below_threshold_unknown_metric_or_other_plc() -> None:
    assert choose_action(PLANT, alert(1.0, "vibration")) is None
    assert choose_action(PLANT, alert(9.0, "flux_capacitor")) is None
    assert choose_action(PLANT, alert(9.0, "vibration", plc="press-7")) is None


def test_catalog_write_within_bounds_passes() -> None:
    plc, setpoint = validate_write(PLANT, write("reduce_motor_speed_to_60pct", 1050), [APPROVER])
    assert (plc.id, setpoint.name) == ("conveyor-1", "speed_setpoint")


@pytest.mark.parametrize(
    ("req", "kind"),
    [
        (write("open_all_valves", 1), "ActionNotInCatalog"),
        (write("send_alert_to_backup_tech", 1), "ActionNotInCatalog"),
        (write("modify_plc_program", 1), "ActionNotInCatalog"),
        (write("shutdown_motor", 0), "ApprovalMissing"),
        (write("reduce_motor_speed_to_60pct", 1051), "ValueOutOfBounds"),
        (write("reduce_motor_speed_to_60pct", float("nan")), "ValueOutOfBounds"),
        (write("shutdown_motor", 2, approved_by=APPROVER), "ValueOutOfBounds"),
        (write("shutdown_motor", 0, approved_by="whatsapp:+19990000000"), "ApprovalMissing"),
        (write("shutdown_motor", 0, approved_by="whatsapp:+1555\x00"), "MalformedRequest"),
    ],
)
def test_writes_outside_the_rules_are_refused_before_io(req: PlcWriteInput, kind: str) -> None:
    assert refused(req) == kind


def test_read_back_comparison_uses_register_resolution() -> None:
    plc = PLANT.plc("conveyor-1")
    assert plc is not None
    speed = plc.setpoint("speed_setpoint")
    assert speed is not None
    assert same_value(speed, 1050, 1050.4)
    assert not same_value(speed, 1050, 1051)
