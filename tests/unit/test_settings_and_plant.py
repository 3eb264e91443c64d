from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from factorylm.plant import PlantConfigError, Policy, load_plant
from factorylm.settings import PROJECT_ROOT, SettingsError, load_settings, reveal

EXAMPLE = PROJECT_ROOT / "config" / "plant.yaml"


def test_malformed_setting_names_the_variable_and_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORYLM_PG_PORT", "not-a-port")
    with pytest.raises(SettingsError, match="FACTORYLM_PG_PORT"):
        load_settings()
    monkeypatch.delenv("FACTORYLM_PG_PORT")
    monkeypatch.setenv("FACTORYLM_TEMPORAL_ADDRESS", "localhost")
    with pytest.raises(SettingsError, match=r"FACTORYLM_TEMPORAL_ADDRESS.*HOST:PORT"):
        load_settings()


def test_approvers_accept_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORYLM_APPROVERS", "whatsapp:+1555000001, whatsapp:+1555000002")
    assert load_settings().approvers == ["whatsapp:+1555000001", "whatsapp:+1555000002"]


def test_secrets_never_show_when_settings_are_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORYLM_TWILIO_AUTH_TOKEN", "tw-secret-123")
    monkeypatch.setenv("FACTORYLM_CMMS", "atlas")
    monkeypatch.setenv("FACTORYLM_ATLAS_URL", "http://atlas.local")
    monkeypatch.setenv("FACTORYLM_ATLAS_EMAIL", "maint@plant.example")
    monkeypatch.setenv("FACTORYLM_ATLAS_PASSWORD", "atlas-secret-456")
    settings = load_settings()
    shown = repr(settings) + str(settings.model_dump()) + settings.model_dump_json()
    assert "tw-secret-123" not in shown and "atlas-secret-456" not in shown
    assert reveal(settings.twilio_auth_token) == "tw-secret-123"
    assert reveal(settings.atlas_password) == "atlas-secret-456"


def test_an_empty_secret_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORYLM_TWILIO_AUTH_TOKEN", "")
    settings = load_settings()
    assert settings.twilio_auth_token is None and reveal(settings.twilio_auth_token) == ""
    monkeypatch.setenv("FACTORYLM_CMMS", "atlas")
    monkeypatch.setenv("FACTORYLM_ATLAS_URL", "http://atlas.local")
    monkeypatch.setenv("FACTORYLM_ATLAS_EMAIL", "maint@plant.example")
    with pytest.raises(SettingsError, match="FACTORYLM_ATLAS_PASSWORD"):
        load_settings()


def test_example_plant_loads_with_the_default_catalog() -> None:
    plant = load_plant(EXAMPLE)
    policies = {a.name: a.policy for a in plant.actions}
    assert policies == {
        "reduce_motor_speed_to_60pct": Policy.AUTO,
        "send_alert_to_backup_tech": Policy.AUTO,
        "schedule_maintenance": Policy.AUTO,
        "shutdown_motor": Policy.APPROVAL,
        "lower_oven_temperature": Policy.APPROVAL,
        "stop_filler": Policy.APPROVAL,
        "modify_plc_program": Policy.NEVER,
    }
    vibration = plant.plcs[0].metric("vibration")
    assert vibration is not None and vibration.address == 2 and vibration.scale == 0.01


def _write(tmp_path: Path, raw: dict[str, object]) -> Path:
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _raw() -> dict[str, object]:
    return yaml.safe_load(EXAMPLE.read_text())  # type: ignore[no-any-return]


def test_error_names_file_plc_and_field(tmp_path: Path) -> None:
    raw = _raw()
    raw["plcs"][0]["metrics"][1]["type"] = "float128"  # type: ignore[index]
    path = _write(tmp_path, raw)
    with pytest.raises(PlantConfigError) as err:
        load_plant(path)
    message = str(err.value)
    assert str(path) in message
    assert "plcs[conveyor-1].metrics[motor_temp].type" in message


def test_action_on_unknown_plc_or_setpoint_is_refused(tmp_path: Path) -> None:
    raw = _raw()
    raw["actions"][0]["plc"] = "press-9"  # type: ignore[index]
    with pytest.raises(PlantConfigError, match="unknown PLC 'press-9'"):
        load_plant(_write(tmp_path, raw))
    raw = _raw()
    raw["actions"][0]["setpoint"] = "turbo"  # type: ignore[index]
    with pytest.raises(PlantConfigError, match="no setpoint 'turbo'"):
        load_plant(_write(tmp_path, raw))


def test_catalog_value_outside_setpoint_bounds_is_refused(tmp_path: Path) -> None:
    raw = _raw()
    raw["actions"][0]["value"] = 5000  # type: ignore[index]
    with pytest.raises(PlantConfigError, match=r"outside speed_setpoint bounds \[0.0, 1750.0\]"):
        load_plant(_write(tmp_path, raw))


def test_modbus_point_without_register_is_refused(tmp_path: Path) -> None:
    raw = _raw()
    del raw["plcs"][0]["metrics"][0]["register"]  # type: ignore[index]
    with pytest.raises(PlantConfigError, match="needs register"):
        load_plant(_write(tmp_path, raw))


def test_missing_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(PlantConfigError, match="cannot read plant file"):
        load_plant(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("plcs: [unclosed")
    with pytest.raises(PlantConfigError, match="not valid YAML"):
        load_plant(bad)
