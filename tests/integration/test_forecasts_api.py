"""GET /forecasts on the real stack: what the ingest's publisher stored in PostgreSQL, soonest
first, for a reading token only; a metric that stopped trending leaves the list."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client

from api_rig import ApiRig, api_rig
from factorylm.api_tokens import Role
from factorylm.models.forecasts import Forecast
from factorylm.plant import Baseline, Metric
from factorylm.settings import Settings
from ingest.drift import DriftConfig, DriftDetector
from ingest.forecast import ForecastPublisher


@pytest.fixture
async def rig(tmp_path: Path, settings: Settings, client: Client) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path, settings, client) as rig:
        yield rig


def ramping(plc: str, per_hour: dict[str, float], ago: timedelta = timedelta()) -> DriftDetector:
    """A detector fed an hour of noise-free ramps, 1 Hz, from 2.1 (baseline 2.1 ± 0.3), the
    samples stamped `ago` before now."""
    d = DriftDetector(DriftConfig(), lambda alert: None, units={(plc, m): "mm/s" for m in per_hour})
    for name in per_hour:
        d.configure(plc, Metric.model_validate({"name": name, "register": 0, "cusum": None,
                                                "ewma": None, "stuck": None}))  # fmt: skip
        d.set_baseline(plc, name, Baseline(mean=2.1, std=0.3))
    now = datetime.now(UTC) - ago
    for i in range(3600):
        for name, slope in per_hour.items():
            d.observe(plc, name, float(i), 2.1 + slope * i / 3600, now)
    return d


async def test_forecasts_are_served_soonest_first_to_readers_and_leave_when_the_trend_ends(
    rig: ApiRig, pool: asyncpg.Pool
) -> None:
    plc = f"fc-{uuid.uuid4().hex[:6]}"
    # 4σ is 3.3: from ~2.39 after the hour, 0.3 mm/s/h gets there in ~3 h, 0.6 in ~1 h.
    detector = ramping(plc, {"slow": 0.3, "fast": 0.6})
    # A metric whose PLC went silent 10 minutes ago keeps its last forecast in the detector;
    # it is not published as current.
    silent = ramping(plc, {"silent": 0.6}, ago=timedelta(minutes=10))
    publisher = ForecastPublisher(
        rig.settings.pg_dsn, lambda: detector.forecasts() + silent.forecasts(), [plc]
    )
    async with pool.acquire() as conn:
        await publisher.publish(conn)
    viewer = await rig.token(Role.VIEWER)
    async with rig.http(viewer) as http:
        answer = await http.get("/forecasts")
    assert answer.status_code == 200
    ours = [f for f in answer.json()["forecasts"] if f["plc_id"] == plc]
    assert [f["metric"] for f in ours] == ["fast", "slow"]
    fast = Forecast.model_validate({k: v for k, v in ours[0].items()
                                    if k not in ("due", "text", "updated_at")})  # fmt: skip
    assert fast.target == "sigma" and fast.threshold == pytest.approx(3.3)
    assert fast.slope_per_hour == pytest.approx(0.6, rel=0.01)
    # From the line at the middle of the last closed minute (58.5 min: 2.1 + 0.585) to 3.3.
    assert fast.eta_s == pytest.approx((1.2 - 0.585) / 0.6 * 3600, rel=0.02)
    assert ours[0]["text"].startswith("fast on " + plc + " will reach 4σ (3.3 mm/s) in ~")
    uploader = await rig.token(Role.UPLOADER)
    async with rig.http(uploader) as http:
        assert (await http.get("/forecasts")).status_code == 403
    # The trend is over: the next round stores that, and the list no longer has them.
    async with pool.acquire() as conn:
        await ForecastPublisher(rig.settings.pg_dsn, list, [plc]).publish(conn)
    async with rig.http(viewer) as http:
        after = (await http.get("/forecasts")).json()["forecasts"]
    assert [f for f in after if f["plc_id"] == plc] == []
    stored = await pool.fetchval(
        "SELECT count(*) FROM forecasts WHERE plc_id = $1 AND forecast IS NULL", plc
    )
    assert stored == 2
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM forecasts WHERE plc_id = $1 AND metric = 'silent'", plc
        )
        == 0
    )
