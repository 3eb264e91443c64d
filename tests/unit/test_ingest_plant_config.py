"""The plant file's PLC section: every protocol's addressing, and errors that name the file,
the PLC and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from factorylm.drivers import s7
from factorylm.drivers.registers import plan_reads
from factorylm.plant import PlantConfigError, load_plant
from factorylm.settings import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "config" / "plant.yaml"


def _raw() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(SHIPPED.read_text())
    return raw


def _plc(raw: dict[str, Any], plc_id: str) -> dict[str, Any]:
    return next(p for p in raw["plcs"] if p["id"] == plc_id)


def _load(tmp_path: Path, raw: dict[str, Any]) -> str:
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PlantConfigError) as err:
        load_plant(path)
    message = str(err.value)
    assert message.startswith(str(path))
    return message


def test_the_shipped_plant_describes_the_seed_plant() -> None:
    plant = load_plant(SHIPPED)
    press, mixer, pump = (plant.plc(i) for i in ("press-1", "mixer-1", "pump-1"))
    assert press is not None and mixer is not None and pump is not None
    assert [(m.name, m.db, m.offset, m.type) for m in press.metrics] == [
        ("motor_speed", 1, 0, "real"),
        ("motor_temp", 1, 4, "real"),
        ("vibration", 1, 8, "real"),
        ("current", 1, 12, "real"),
    ]
    assert press.poll_interval_ms == mixer.poll_interval_ms == 100
    assert [m.tag for m in mixer.metrics] == ["Motor_Speed", "Motor_Temp", "Vibration"]
    assert pump.poll_interval_ms == 1000 and pump.protocol == "modbus_rtu"
    # The register map covers holding registers 0-50 and is read in one request.
    blocks = plan_reads(list(pump.metrics))
    assert [(b.start, b.count) for b in blocks] == [(0, 51)]
    assert [(a.db, a.start, a.size) for a in s7.plan_reads(list(press.metrics))] == [(1, 0, 16)]
    # conveyor-1 and the catalog actions that write it are unchanged.
    conveyor = plant.plcs[0]
    assert conveyor.id == "conveyor-1" and conveyor.port == 15020
    assert plant.action("shutdown_motor") is not None


def test_s7_point_without_offset_names_plc_and_point(tmp_path: Path) -> None:
    raw = _raw()
    del _plc(raw, "press-1")["metrics"][2]["offset"]
    message = _load(tmp_path, raw)
    assert "plcs[press-1]" in message and "'vibration' needs db and offset" in message


def test_modbus_type_on_an_s7_plc_is_refused(tmp_path: Path) -> None:
    raw = _raw()
    _plc(raw, "press-1")["metrics"][0]["type"] = "f32"
    message = _load(tmp_path, raw)
    assert "plcs[press-1]" in message and "'f32' is not a s7 type" in message


def test_logix_point_needs_a_tag(tmp_path: Path) -> None:
    raw = _raw()
    del _plc(raw, "mixer-1")["metrics"][1]["tag"]
    assert "'motor_temp' needs tag" in _load(tmp_path, raw)


def test_rtu_without_serial_port_is_refused(tmp_path: Path) -> None:
    raw = _raw()
    del _plc(raw, "pump-1")["serial_port"]
    message = _load(tmp_path, raw)
    assert "plcs[pump-1]" in message and "needs serial_port" in message


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("parity", "X", "plcs[pump-1].parity"),
        ("poll_interval_ms", 1, "plcs[pump-1].poll_interval_ms"),
        ("bytesize", 9, "plcs[pump-1].bytesize"),
        ("device_id", 300, "plcs[pump-1].device_id"),
    ],
)
def test_bad_serial_and_poll_fields_name_the_field(
    tmp_path: Path, field: str, value: object, where: str
) -> None:
    raw = _raw()
    _plc(raw, "pump-1")[field] = value
    assert where in _load(tmp_path, raw)


def test_bad_word_order_names_the_metric(tmp_path: Path) -> None:
    raw = _raw()
    _plc(raw, "pump-1")["metrics"][4]["word_order"] = "middle"
    assert "plcs[pump-1].metrics[flow].word_order" in _load(tmp_path, raw)


def test_s7_bool_needs_a_bit(tmp_path: Path) -> None:
    raw = _raw()
    _plc(raw, "press-1")["setpoints"] = [
        {"name": "run", "db": 1, "offset": 16, "type": "bool", "min": 0, "max": 1}
    ]
    assert "an S7 bool needs bit" in _load(tmp_path, raw)


def test_s7_values_are_big_endian_and_scaled() -> None:
    plant = load_plant(SHIPPED)
    press = plant.plc("press-1")
    assert press is not None
    speed = press.metrics[0]
    assert s7.encode(speed, 1450.5) == bytearray(b"\x44\xb5\x50\x00")
    assert s7.decode(speed, b"\x44\xb5\x50\x00") == 1450.5
    scaled = speed.model_copy(update={"type": "int", "scale": 0.1})
    assert s7.encode(scaled, 52.3) == bytearray((523).to_bytes(2, "big"))
    assert s7.decode(scaled, (523).to_bytes(2, "big")) == pytest.approx(52.3)
