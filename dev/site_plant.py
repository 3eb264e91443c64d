"""A plant of several sites for tests and benchmarks: one plant file listing the sites, each
site in its own file beside it (the shape docs/operations.md, "Sites", describes).

Every site has Modbus TCP PLCs with the same three tank metrics and one writable valve, and a
catalog with an action of the same name at every site (`close_valve`), so a site mix-up shows
as a write on the wrong machine rather than as an unknown action.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from factorylm.plant import Plant, load_plant

TANK: list[dict[str, Any]] = [
    {"name": "level", "register": 0, "type": "f32", "baseline": {"mean": 50.0, "std": 1.0}},
    {"name": "pressure", "register": 2, "type": "f32", "baseline": {"mean": 3.0, "std": 0.1}},
    {"name": "temp", "register": 4, "type": "f32", "baseline": {"mean": 20.0, "std": 0.5}},
]
VALVE = {"name": "valve", "register": 10, "type": "u16", "min": 0, "max": 100}
ACTION = "close_valve"


def site_file(
    site: str,
    ports: list[int],
    *,
    host: str = "127.0.0.1",
    poll_interval_ms: int = 100,
    approvers: list[str] | None = None,
    policy: str = "auto",
    tag: str = "",
) -> dict[str, Any]:
    """One site's plant file: PLCs `<site>-tank-<i>` (`<site>-<tag>tank-<i>` with a tag, so
    runs that share a database never share an id) on `host` at `ports`."""
    plcs = [
        {
            "id": f"{site}-{tag}tank-{i}",
            "vendor": "generic_modbus",
            "protocol": "modbus_tcp",
            "host": host,
            "port": port,
            "poll_interval_ms": poll_interval_ms,
            "metrics": TANK,
            "setpoints": [VALVE],
        }
        for i, port in enumerate(ports)
    ]
    raw: dict[str, Any] = {
        "plcs": plcs,
        "actions": [
            {
                "name": ACTION,
                "description": f"Close {site}-{tag}tank-0's inlet valve",
                "kind": "plc_write",
                "policy": policy,
                "plc": f"{site}-{tag}tank-0",
                "setpoint": "valve",
                "value": 0,
                "metrics": ["pressure"],
                "min_sigma": 2,
            }
        ],
    }
    if approvers is not None:
        raw["approvers"] = approvers
    return raw


def write_site_plant(
    directory: Path,
    sites: dict[str, list[int]],
    *,
    name: str = "group",
    site_options: Callable[[str], dict[str, Any]] | None = None,
) -> tuple[Plant, Path]:
    """Write `<dir>/plant.yaml` listing the sites and `<dir>/sites/<site>.yaml` for each;
    returns the loaded plant and the main file's path."""
    (directory / "sites").mkdir(parents=True, exist_ok=True)
    for site, ports in sites.items():
        raw = site_file(site, ports, **(site_options(site) if site_options else {}))
        (directory / "sites" / f"{site}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    main = {"name": name, "sites": [{"name": s, "file": f"sites/{s}.yaml"} for s in sites]}
    path = directory / "plant.yaml"
    path.write_text(yaml.safe_dump(main, sort_keys=False))
    return load_plant(path), path
