"""The plant file's MQTT entries: what a Sparkplug node, a JSON topic and the publisher need,
refused with the entry's name when missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from factorylm.plant import PlantConfigError, load_plant


def _load(tmp_path: Path, plc: dict[str, Any], **top: Any) -> None:
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump({"plcs": [plc], **top}))
    load_plant(path)


SPB = {
    "id": "filler-1",
    "vendor": "edge",
    "protocol": "sparkplug_b",
    "group": "g",
    "edge_node": "n",
}


def test_a_sparkplug_node_without_its_ids_is_refused(tmp_path: Path) -> None:
    plc = {**SPB, "metrics": [{"name": "rate"}]}
    del plc["edge_node"]
    with pytest.raises(PlantConfigError, match=r"plcs\[filler-1\].*needs group and edge_node"):
        _load(tmp_path, plc)


@pytest.mark.parametrize("bad", ["a/b", "a+", "#"])
def test_sparkplug_ids_cannot_open_a_topic_level_or_a_wildcard(tmp_path: Path, bad: str) -> None:
    with pytest.raises(PlantConfigError, match="edge_node"):
        _load(tmp_path, {**SPB, "edge_node": bad, "metrics": [{"name": "rate"}]})


def test_a_json_point_needs_its_topic_and_path(tmp_path: Path) -> None:
    plc = {
        "id": "tanks",
        "vendor": "gw",
        "protocol": "mqtt_json",
        "metrics": [{"name": "level", "topic": "t"}],
    }
    with pytest.raises(PlantConfigError, match=r"'level' needs topic and json_path"):
        _load(tmp_path, plc)


def test_the_password_is_named_by_an_environment_variable_not_written(tmp_path: Path) -> None:
    with pytest.raises(PlantConfigError, match="password"):
        _load(tmp_path, {**SPB, "password": "hunter2", "metrics": [{"name": "rate"}]})


@pytest.mark.parametrize("namespace", ["acme/#", "a/+/b", "$SYS"])
def test_the_publish_namespace_cannot_hold_wildcards_or_reserved_topics(
    tmp_path: Path, namespace: str
) -> None:
    plc = {**SPB, "metrics": [{"name": "rate"}]}
    with pytest.raises(PlantConfigError, match=r"publish\.namespace"):
        _load(tmp_path, plc, publish={"namespace": namespace})
