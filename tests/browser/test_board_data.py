"""The plant board's data and live endpoints over HTTP, on the real API, PostgreSQL and
Temporal (tests/api_rig.py): bucket averages on the page's grid, the baseline band and limits
from the plant file, non-finite samples left out, the memory path equal to the database's, one
listener for every browser, and the sign-in cookie."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from temporalio.client import Client

from api import board
from api.board import BoardData, TrendCache
from api_rig import ApiRig, api_rig
from factorylm.api_tokens import Role
from factorylm.plant import load_plant
from factorylm.settings import Settings
from helpers import free_port, until


def _plant_file(tmp_path: Path) -> tuple[Path, str]:
    plc = f"board-{uuid.uuid4().hex[:8]}"
    raw = {
        "name": "board-test",
        "plcs": [
            {
                "id": plc,
                "vendor": "generic_modbus",
                "protocol": "modbus_tcp",
                "port": free_port(),
                "metrics": [
                    {
                        "name": "level",
                        "register": 0,
                        "baseline": {"mean": 50.0, "std": 1.0},
                        "drift_threshold_sigma": 3.0,
                        "min": 10.0,
                        "max": 90.0,
                    },
                    {"name": "temp", "register": 1},
                ],
            }
        ],
    }
    path = tmp_path / "board-plant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, plc


@contextlib.asynccontextmanager
async def _board(
    tmp_path: Path, settings: Settings, client: Client
) -> AsyncIterator[tuple[ApiRig, str, asyncpg.Pool, str]]:
    """The API on a one-PLC plant file: the rig, the PLC's id, its pool and a viewer token."""
    plant_file, plc = _plant_file(tmp_path)
    async with api_rig(tmp_path, settings, client, plant_file=plant_file) as rig:
        assert rig.stack.pool is not None
        yield rig, plc, rig.stack.pool, await rig.token(Role.VIEWER)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _values_by_time(payload: dict[str, Any], plc: str, metric: str) -> dict[float, float]:
    series = next(s for s in payload["series"] if s["plc"] == plc and s["metric"] == metric)
    data = series["data"]
    return {
        payload["t0"] + (data["i0"] + j) * payload["step_s"]: v
        for j, v in enumerate(data["v"])
        if v is not None
    }


def _points(update: dict[str, Any]) -> list[list[Any]]:
    """An update's runs [t, first series index, [values]] as [index, t, value] points."""
    return [[i0 + j, t, v] for t, i0, values in update.get("p", []) for j, v in enumerate(values)]


async def _insert(pool: asyncpg.Pool, rows: list[tuple[datetime, str, str, float]]) -> None:
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "samples", records=rows, columns=("time", "plc_id", "metric", "value")
        )


async def test_board_data_averages_buckets_on_the_pages_grid_and_leaves_out_nan(
    tmp_path: Path, settings: Settings, client: Client
) -> None:
    async with _board(tmp_path, settings, client) as (rig, plc, pool, viewer):
        # 15 min over 300 points (a 600 px chart) is a 3 s bucket; one that ended a minute ago.
        start = (int(time.time()) - 60) // 3 * 3
        await _insert(
            pool,
            [
                (_at(start + 0.5), plc, "level", 10.0),
                (_at(start + 1.5), plc, "level", 20.0),
                (_at(start + 2.5), plc, "level", math.nan),  # a bad sample: no bucket's mean
                (_at(start + 3.2), plc, "level", 40.0),
            ],
        )
        async with rig.http(viewer) as http:
            r = await http.get("/board/data", params={"range": "15m", "width": 600})
            assert r.status_code == 200
            payload = json.loads(r.text)  # strict JSON: a NaN would not parse as a number
            assert payload["step_s"] == 3
            values = _values_by_time(payload, plc, "level")
            assert values == {float(start): 15.0, float(start + 3): 40.0}
            level = next(s for s in payload["series"] if s["metric"] == "level")
            assert (level["mean"], level["std"], level["threshold_sigma"]) == (50.0, 1.0, 3.0)
            assert (level["min"], level["max"]) == (10.0, 90.0)
            temp = next(s for s in payload["series"] if s["metric"] == "temp")
            assert temp["mean"] is None and temp["data"]["v"] == []
            # Beyond what the page offers: refused, not guessed.
            assert (await http.get("/board/data", params={"range": "30d"})).status_code == 400
            bad_width = await http.get("/board/data", params={"width": "wide"})
            assert bad_width.status_code == 400


async def test_page_data_is_gzipped_once_for_browsers_that_accept_it_and_plain_for_others(
    tmp_path: Path, settings: Settings, client: Client
) -> None:
    async with _board(tmp_path, settings, client) as (rig, plc, pool, viewer):
        now = int(time.time())
        # Ten minutes of one sample a second: a page of 300 buckets on a 600 px chart.
        await _insert(
            pool,
            [(_at(now - 600 + k), plc, "level", 40.0 + (k % 17) / 4) for k in range(600)],
        )
        params: dict[str, str | int] = {"range": "15m", "width": 600}
        async with rig.http(viewer) as http:
            plain = await http.get(
                params=params, url="/board/data", headers={"accept-encoding": "identity"}
            )
            packed = await http.get(
                params=params, url="/board/data", headers={"accept-encoding": "br, gzip;q=0.8"}
            )
            refused = await http.get(
                params=params, url="/board/data", headers={"accept-encoding": "gzip;q=0, br"}
            )
        assert "content-encoding" not in plain.headers
        assert "content-encoding" not in refused.headers
        assert packed.headers["content-encoding"] == "gzip"
        assert "accept-encoding" in packed.headers["vary"].lower()
        # httpx unpacked it: the same page (the three fall within one shared encoding).
        assert packed.content == plain.content == refused.content
        assert len(_values_by_time(json.loads(packed.content), plc, "level")) >= 200
        # What went over the wire is the compressed body, a fraction of the page.
        assert packed.num_bytes_downloaded * 3 < plain.num_bytes_downloaded


async def test_the_15_minutes_from_memory_equal_the_databases(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    plant_file, plc = _plant_file(tmp_path)
    plant = load_plant(plant_file)
    now = int(time.time())
    # Two samples in each of the last 600 seconds but a few, values no rounding touches.
    rows = [
        (_at(now - 600 + k + frac), plc, "level", float(k % 13) + frac)
        for k in range(590)
        for frac in (0.25, 0.75)
    ]
    await _insert(pool, rows)
    data = BoardData(settings, client, pool, plant)
    cache = TrendCache(data.keys())
    await data.prime(cache)
    for width in (600, 284):
        from_db = json.loads(b"{" + await data.series(900, width) + b"}")
        from_memory = json.loads(b"{" + await data.series(900, width, cache) + b"}")
        assert from_db["step_s"] == from_memory["step_s"]
        db_values = _values_by_time(from_db, plc, "level")
        memory_values = _values_by_time(from_memory, plc, "level")
        assert len(db_values) >= 590 // from_db["step_s"]
        shared = db_values.keys() & memory_values.keys()
        # The two reads may fall either side of a bucket's edge: all but the newest agree.
        assert len(shared) >= len(db_values) - 1
        for t in shared:
            assert math.isclose(db_values[t], memory_values[t], rel_tol=1e-5), t


async def test_one_listener_fans_each_update_out_to_every_browser(
    tmp_path: Path, settings: Settings, client: Client
) -> None:
    async with _board(tmp_path, settings, client) as (rig, plc, pool, viewer):
        got: list[list[dict[str, Any]]] = [[], []]

        async def listeners() -> int:
            count: int = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'LISTEN%samples_written%'"
            )
            return count

        async def browser(n: int, http: httpx.AsyncClient) -> None:
            async with http.stream("GET", "/board/events") as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        got[n].append(json.loads(line.removeprefix("data: ")))

        async with rig.http(viewer) as one, rig.http(viewer) as two:
            first = asyncio.create_task(browser(0, one))
            await until("the first browser's first update", lambda: got[0])
            alone = await listeners()
            assert alone >= 1
            second = asyncio.create_task(browser(1, two))
            await until("the second browser's first update", lambda: got[1])
            assert await listeners() == alone  # no second listener for a second browser
            # A sample, and the writer's notify: both browsers get its 1 s bucket.
            now = time.time()
            await _insert(pool, [(_at(now), plc, "level", 42.5)])
            await pool.execute("SELECT pg_notify('samples_written', '1')")
            point = [0, int(now), 42.5]  # series 0: the plant file's first metric

            def both_have_it() -> bool:
                return all(any(point in _points(u) for u in updates) for updates in got)

            await until("the point in both browsers", both_have_it)
            first.cancel()
            second.cancel()
            await asyncio.gather(first, second, return_exceptions=True)


async def test_a_tick_after_a_notify_reads_from_its_oldest_second_and_not_the_whole_lookback(
    tmp_path: Path, settings: Settings, client: Client, pool: asyncpg.Pool
) -> None:
    plant_file, plc = _plant_file(tmp_path)
    data = BoardData(settings, client, pool, load_plant(plant_file))
    now = time.time()
    earlier = now - 1.5  # inside the lookback, one or two buckets before the newest
    await _insert(pool, [(_at(earlier), plc, "level", 41.5), (_at(now), plc, "level", 42.5)])
    named = {(r["t"], r["v"]) for r in await data.live_rows(since=now) if r["plc_id"] == plc}
    assert named == {(int(now), 42.5)}
    whole = {(r["t"], r["v"]) for r in await data.live_rows() if r["plc_id"] == plc}
    assert whole == {(int(earlier), 41.5), (int(now), 42.5)}


async def test_the_markers_read_of_every_tick_finds_its_alarms_by_index(pool: asyncpg.Pool) -> None:
    # With sequential scans priced out, the plan shows whether an index can answer the read at
    # all; the planner's choice on a test database's few rows would say nothing.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = await conn.fetchval(
            f"EXPLAIN (FORMAT JSON) {board.MARKERS_SQL}", timedelta(seconds=45)
        )
    used = set(re.findall(r'"Index Name": "([a-z_]+)"', plan))
    assert {"alarm_outbox_detected_at", "drift_events_detected_at"} <= used, plan


@pytest.mark.parametrize(
    "payload",
    ["", "7", "7 ", "7 nan", "7 inf", "7 -5", "7 1e400", "7 0x10", "7 " + "9" * 40, "a b c"],
)
def test_a_notify_without_a_usable_oldest_time_names_none(payload: str) -> None:
    assert board._oldest(payload) is None


def test_a_writers_notify_names_its_oldest_sample() -> None:
    assert board._oldest("812 1795161605.250") == 1795161605.25


async def test_a_batch_whose_notify_named_a_later_second_still_reaches_the_browsers(
    tmp_path: Path, settings: Settings, client: Client
) -> None:
    # A notify that was lost, or named another second than its batch holds: the hub's read of
    # the whole lookback, at least every IDLE_TICK_S, brings the point anyway.
    async with _board(tmp_path, settings, client) as (rig, plc, pool, viewer):
        got: list[dict[str, Any]] = []

        async def browser(http: httpx.AsyncClient) -> None:
            async with http.stream("GET", "/board/events") as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        got.append(json.loads(line.removeprefix("data: ")))

        async with rig.http(viewer) as http:
            stream = asyncio.create_task(browser(http))
            try:
                await until("the first update", lambda: got)
                now = time.time()
                await _insert(pool, [(_at(now), plc, "level", 43.5)])
                await pool.execute("SELECT pg_notify('samples_written', $1)", f"1 {now + 1.5:.3f}")
                point = [0, int(now), 43.5]
                await until(
                    "the point by the next whole read",
                    lambda: any(point in _points(u) for u in got),
                    timeout_s=board.IDLE_TICK_S + 3,
                )
            finally:
                stream.cancel()
                await asyncio.gather(stream, return_exceptions=True)


async def test_updates_repeat_no_unchanged_section_and_a_new_stream_starts_with_all_of_it(
    tmp_path: Path, settings: Settings, client: Client
) -> None:
    plant_file, plc = _plant_file(tmp_path)
    async with api_rig(tmp_path, settings, client, plant_file=plant_file) as rig:
        viewer = await rig.token(Role.VIEWER)
        got: list[list[dict[str, Any]]] = [[], []]

        async def browser(n: int, http: httpx.AsyncClient) -> None:
            async with http.stream("GET", "/board/events") as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        got[n].append(json.loads(line.removeprefix("data: ")))

        def status_updates(n: int) -> list[dict[str, Any]]:
            return [u for u in got[n] if "ages" in u]

        async with rig.http(viewer) as one, rig.http(viewer) as two:
            first = asyncio.create_task(browser(0, one))
            # No ingest runs here: the PLC's collector state stays "no collector".
            await until("three status updates", lambda: len(status_updates(0)) >= 3)
            opening, *later = status_updates(0)
            assert [c["plc"] for c in opening["collectors"]] == [plc]
            assert opening["collectors"][0]["state"] == "no collector"
            assert opening["ages"] == [None] and "writes" in opening
            for update in later:
                assert update["ages"] == [None]  # every PLC's age, on every status update
                assert "collectors" not in update and "writes" not in update
                assert "work_orders" not in update and "messages" not in update
            # A browser that connects now gets everything the first one was told.
            second = asyncio.create_task(browser(1, two))
            await until("the second browser's first event", lambda: got[1])
            replay = got[1][0]
            assert "woke" not in replay  # the replay, no update
            assert [c["plc"] for c in replay["collectors"]] == [plc]
            assert replay["ages"] == [None]
            # Nothing was written meanwhile: the same rows the first browser got at its start.
            assert replay["writes"] == opening["writes"]
            assert replay["work_orders"] == opening["work_orders"]
            first.cancel()
            second.cancel()
            await asyncio.gather(first, second, return_exceptions=True)


async def test_sign_in_sets_an_httponly_strict_cookie_and_a_revoked_token_sees_no_data(
    tmp_path: Path, settings: Settings, client: Client
) -> None:
    plant_file, plc = _plant_file(tmp_path)
    async with api_rig(tmp_path, settings, client, plant_file=plant_file) as rig:
        name = f"viewer-{uuid.uuid4().hex[:6]}"
        viewer = await rig.tokens.add(name, Role.VIEWER, approvers=list(rig.settings.approvers))
        async with httpx.AsyncClient(base_url=rig.url, timeout=10) as http:
            r = await http.post("/board/login", data={"token": viewer})
            assert r.status_code == 303 and r.headers["location"] == "/"
            cookie = r.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            board = await http.get("/")  # the client keeps the cookie
            assert board.status_code == 200 and plc in board.text
            assert "default-src 'none'" in board.headers["content-security-policy"]
            assert (await http.get("/board/data")).status_code == 200
            await rig.tokens.revoke(name)
            after = await http.get("/")
            assert after.status_code == 401 and plc not in after.text
            assert (await http.get("/board/data")).status_code == 401
            assert (await http.get("/board/events")).status_code == 401
            signed_out = await http.post("/board/logout")
            assert signed_out.status_code == 303
            assert "max-age=0" in signed_out.headers["set-cookie"].lower()


async def test_an_open_stream_of_a_revoked_token_ends_at_its_next_check(
    tmp_path: Path, settings: Settings, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checked every 30 s in production; a second here, so the test waits for that check.
    monkeypatch.setattr(board, "TOKEN_RECHECK_S", 1.0)
    plant_file, _ = _plant_file(tmp_path)
    async with api_rig(tmp_path, settings, client, plant_file=plant_file) as rig:
        name = f"viewer-{uuid.uuid4().hex[:6]}"
        viewer = await rig.tokens.add(name, Role.VIEWER, approvers=list(rig.settings.approvers))
        updates: list[float] = []
        ended: list[bool] = []

        async def browser(http: httpx.AsyncClient) -> None:
            async with http.stream("GET", "/board/events") as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        updates.append(time.monotonic())
            ended.append(True)

        async with rig.http(viewer) as http:
            stream = asyncio.create_task(browser(http))
            await until("the stream's first update", lambda: updates)
            await rig.tokens.revoke(name)
            await until("the revoked token's stream to end", lambda: ended)
            await stream
            assert (await http.get("/board/events")).status_code == 401  # no reconnect


async def test_an_unreadable_plant_file_makes_the_board_503_and_leaves_the_api_up(
    tmp_path: Path, settings: Settings, client: Client
) -> None:
    broken = tmp_path / "broken-plant.yaml"
    broken.write_text("plcs: [not a plc]\n")
    async with api_rig(tmp_path, settings, client, plant_file=broken) as rig:
        viewer = await rig.token(Role.VIEWER)
        async with rig.http(viewer) as http:
            page = await http.get("/")
            assert page.status_code == 503 and "plant file" in page.text
            assert (await http.get("/board/data")).status_code == 503
            assert (await http.get("/baselines")).status_code == 200
        async with rig.http() as anon:
            assert (await anon.get("/")).status_code == 401  # still no hint without a token
