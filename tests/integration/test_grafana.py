"""The Grafana dashboards: every panel's SQL runs against the real schema, and alert links
open the Plant health dashboard filtered to the event."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import asyncpg
import numpy as np
import pytest
import yaml

from app.deployment import apply_grants
from factorylm.grafana import plant_link
from factorylm.settings import PROJECT_ROOT, Settings
from helpers import own_database

GRAFANA = PROJECT_ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
BOARDS = {p.name: json.loads(p.read_text()) for p in DASHBOARDS}


def expand(
    sql: str,
    *,
    interval: str = "1 minute",
    since: str = "6 hours",
    plc: str = "conveyor-1",
    metric: str = "vibration",
) -> str:
    """Grafana's macros and variables, as Grafana would expand them for one PLC and metric."""
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN now() - interval '{since}' AND now()", sql
    )
    return (
        sql.replace("$__interval", interval)
        .replace("$__timeFrom()", f"(now() - interval '{since}')")
        .replace("$__timeTo()", "now()")
        .replace("$plc", plc)
        .replace("$metric", metric)
    )


def panel_sql(board: str, panel_id: int) -> str:
    (panel,) = [p for p in BOARDS[board]["panels"] if p["id"] == panel_id]
    return str(panel["targets"][0]["rawSql"])


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


@pytest.fixture
async def rollup_db(settings: Settings) -> AsyncIterator[Settings]:
    """A database of its own: the rollup watermark and the drop are database-wide."""
    async with own_database(settings, "gf") as own:
        yield own


async def test_long_ranges_chart_the_rollups_where_the_raw_samples_are_gone(
    rollup_db: Settings,
) -> None:
    """Three days of samples every 30 s on two PLCs, rolled up by the product's job, and the
    raw chunks older than a day dropped: the trend and the cross-vendor panels over 7 days in
    10-minute buckets still show every bucket, each the mean numpy gives for the samples
    generated in it; a range bucketed below a minute reads raw samples only."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    times = [now - timedelta(minutes=3) - i * timedelta(seconds=30) for i in range(3 * 2880)]
    rng = np.random.default_rng(3)
    series = {"gf-1": rng.normal(2.0, 0.3, len(times)), "gf-2": rng.normal(5.0, 0.5, len(times))}
    baselines = {"gf-1": (2.1, 0.25), "gf-2": (4.8, 0.4)}
    conn = await asyncpg.connect(rollup_db.pg_dsn)
    try:
        await conn.copy_records_to_table(
            "samples",
            records=[
                (t, plc, "vibration", float(v))
                for plc, values in series.items()
                for t, v in zip(times, values, strict=True)
            ],
            columns=["time", "plc_id", "metric", "value"],
        )
        for plc, (mean, std) in baselines.items():
            await conn.execute(
                """INSERT INTO baselines (run_key, plc_id, metric, mean, std, p95, p99,
                       sample_count, window_start, window_end)
                   VALUES ('gf', $1, 'vibration', $2, $3, 0, 0, 1, now(), now())""",
                plc,
                mean,
                std,
            )
            await conn.execute(
                """INSERT INTO collector_status (plc_id, vendor, protocol, state,
                       poll_interval_ms) VALUES ($1, 'siemens', 's7', 'ok', 30000)""",
                plc,
            )
        watermark = None
        while (
            nxt := await conn.fetchval(
                "SELECT factorylm_roll_up_samples(now(), '2 hours', '6 hours')"
            )
        ) != watermark:
            watermark = nxt
        assert await conn.fetchval("SELECT factorylm_drop_raw_samples('1 day', '2 hours')") > 0
        raw_from = await conn.fetchval("SELECT min(time) FROM samples")
        assert now - raw_from <= timedelta(hours=48)  # a day and more of the three gone

        await apply_grants(conn)

        async def as_grafana(sql: str) -> list[asyncpg.Record]:
            async with conn.transaction():
                await conn.execute("SET LOCAL ROLE grafana_reader")
                rows: list[asyncpg.Record] = await conn.fetch(sql)
                return rows

        # $__interval as Grafana writes it (10m, 10s): PostgreSQL reads that as an interval.
        trend = await as_grafana(
            expand(panel_sql("plant-health.json", 1), interval="10m", since="7 days", plc="gf-1")
        )
        by_vendor = await as_grafana(
            expand(panel_sql("plant-health.json", 3), interval="10m", since="7 days")
        )
        fine = await as_grafana(
            expand(panel_sql("plant-health.json", 1), interval="10s", since="7 days", plc="gf-1")
        )
    finally:
        await conn.close()

    at = np.array([t.timestamp() for t in times])
    buckets = np.floor(at / 600) * 600
    expected = {
        plc: {b: float(np.mean(values[buckets == b])) for b in np.unique(buckets)}
        for plc, values in series.items()
    }
    assert [r["time"].timestamp() for r in trend] == sorted(expected["gf-1"])
    assert trend[0]["time"] < raw_from  # the first day and more: from the rollups only
    for r in trend:
        assert r["vibration"] == pytest.approx(expected["gf-1"][r["time"].timestamp()], rel=1e-12)
        assert r["baseline"] == 2.1 and r["+2σ"] == pytest.approx(2.6)
    for plc, (mean, std) in baselines.items():
        rows = {
            r["time"].timestamp(): r["sigma"] for r in by_vendor if r["series"] == f"siemens {plc}"
        }
        assert rows.keys() == expected[plc].keys()
        for b, sigma in rows.items():
            assert sigma == pytest.approx((expected[plc][b] - mean) / std, rel=1e-9)
    # Below a minute a bucket is finer than a rollup: raw samples only, one each 30 s.
    assert fine[0]["time"] >= raw_from and len(fine) == int((at >= raw_from.timestamp()).sum())
