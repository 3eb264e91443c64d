"""Test helpers shared by the test modules (importable: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import socket
from pathlib import Path

import yaml

from factorylm.plant import Plant
from factorylm.settings import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plant_with_free_ports(tmp_path: Path) -> tuple[Plant, Path]:
    """The shipped demo plant, with each simulated PLC moved to a free port."""
    raw = yaml.safe_load((PROJECT_ROOT / "config" / "plant.yaml").read_text())
    for plc in raw["plcs"]:
        plc["port"] = free_port()
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return Plant.model_validate(raw), path
