"""The Grafana dashboards: every panel's SQL runs against the real schema, and alert links
open the Plant health dashboard filtered to the event."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlparse

import asyncpg
import pytest
import yaml

from factorylm.grafana import plant_link
from factorylm.settings import PROJECT_ROOT

GRAFANA = PROJECT_ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
BOARDS = {p.name: json.loads(p.read_text()) for p in DASHBOARDS}


def expand(sql: str) -> str:
    """Grafana's macros and variables, as Grafana would expand them for one PLC and metric."""
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)", r"\1 BETWEEN now() - interval '6 hours' AND now()", sql
    )
    return (
        sql.replace("$__interval", "1 minute")
        .replace("$__timeFrom()", "(now() - interval '6 hours')")
        .replace("$__timeTo()", "now()")
        .replace("$plc", "conveyor-1")
        .replace("$metric", "vibration")
    )


def queries(board: dict[str, object]) -> list[tuple[str, str]]:
    out = []
    for panel in board["panels"]:  # type: ignore[attr-defined]
        for target in panel["targets"]:
            out.append((panel["title"], target["rawSql"]))
    for variable in board["templating"]["list"]:  # type: ignore[index]
        out.append((f"variable {variable['name']}", variable["query"]))
    return out


def test_both_dashboards_are_provisioned() -> None:
    titles = {json.loads(p.read_text())["title"] for p in DASHBOARDS}
    assert titles == {"Plant health", "Agent activity"}
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "factorylm.yaml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "timescaledb.yaml").read_text()
    )
    ds = source["datasources"][0]
    assert ds["uid"] == "factorylm-timescaledb" and ds["jsonData"]["timescaledb"] is True
    assert ds["secureJsonData"]["password"].startswith(
        "${"
    )  # from the environment, never written here


@pytest.mark.parametrize("name", sorted(BOARDS))
async def test_every_panel_query_runs_on_the_schema(name: str, pool: asyncpg.Pool) -> None:
    board = BOARDS[name]
    ran = 0
    async with pool.acquire() as conn:
        for title, sql in queries(board):
            try:
                await conn.fetch(expand(sql))
            except asyncpg.PostgresError as exc:
                raise AssertionError(f"{name}: {title}: {exc}") from exc
            ran += 1
    assert ran >= 4


def test_alert_links_are_filtered_to_the_event() -> None:
    at = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    link = plant_link("http://grafana:3000/", "press-1", "vibration", at)
    assert link is not None
    parsed = urlparse(link)
    assert parsed.path == "/d/factorylm-plant/plant-health"
    q = parse_qs(parsed.query)
    assert q["var-plc"] == ["press-1"] and q["var-metric"] == ["vibration"]
    assert int(q["from"][0]) == int(at.timestamp() * 1000) - 3_600_000
    assert int(q["to"][0]) == int(at.timestamp() * 1000) + 900_000
    assert plant_link("", "press-1", "vibration", at) is None
    uid = json.loads((GRAFANA / "dashboards" / "plant-health.json").read_text())["uid"]
    assert f"/d/{uid}/" in link
