"""Work orders in the built-in store and in Atlas CMMS: the client (httpx) against a local Atlas
that answers as the real server does (dev/fakes/atlas.py), the links in the real database."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import asyncpg
import pytest

from dev.fakes.atlas import FREE_ACTIVE_WORK_ORDERS, FREE_ASSETS, FakeAtlas
from dev.fakes.server import LocalServer
from factorylm.cmms.atlas import AtlasCmms, AtlasError, AtlasRefusedError, marker
from factorylm.cmms.builtin import BuiltinCmms
from factorylm.models.work_orders import AttachmentRef, OpenWorkOrderInput, WorkOrderPriority
from factorylm.settings import SettingsError, load_settings

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def order(
    key: str,
    attachments: list[AttachmentRef] | None = None,
    *,
    description: str = "Vibration +4σ",
    asset_id: str | None = "conveyor-1",
) -> OpenWorkOrderInput:
    return OpenWorkOrderInput(
        external_key=key,
        title="Bearing noise on conveyor-1",
        description=description,
        priority=WorkOrderPriority.HIGH,
        asset_id=asset_id,
        due_date=date(2026, 11, 27),
        attachments=attachments or [],
    )


def key() -> str:
    return f"drift-conveyor-1-vibration/{uuid.uuid4()}"


@pytest.fixture
def photo(tmp_path: Path) -> AttachmentRef:
    path = tmp_path / "bearing.png"
    path.write_bytes(PNG)
    return AttachmentRef(name="bearing.png", content_type="image/png", path=str(path))


async def test_builtin_is_idempotent_and_keeps_every_field(
    pool: asyncpg.Pool, photo: AttachmentRef
) -> None:
    store = BuiltinCmms(pool)
    k = key()
    first = await store.open(order(k, [photo]))
    again = await store.open(order(k, [photo]))
    assert first.created and not again.created and first.id == again.id
    row = await pool.fetchrow("SELECT * FROM work_orders WHERE external_key = $1", k)
    assert (row["priority"], row["status"], row["asset_id"]) == ("HIGH", "OPEN", "conveyor-1")
    assert row["due_date"] == date(2026, 11, 27)
    assert json.loads(row["attachments"]) == [photo.model_dump()]


@pytest.fixture
async def fake() -> AsyncIterator[FakeAtlas]:
    atlas = FakeAtlas()
    server = LocalServer(atlas.app())
    await server.start()
    atlas.url = server.url  # type: ignore[attr-defined]
    yield atlas
    await server.stop()


@pytest.fixture(autouse=True)
async def no_remembered_assets(pool: asyncpg.Pool) -> None:
    # Each test has its own local Atlas: asset links another test's Atlas made mean nothing.
    await pool.execute("DELETE FROM cmms_assets")


@pytest.fixture
async def store(pool: asyncpg.Pool, fake: FakeAtlas) -> AsyncIterator[AtlasCmms]:
    client = AtlasCmms(pool, fake.url, fake.email, fake.password)  # type: ignore[attr-defined]
    yield client
    await client.close()


def add_asset(fake: FakeAtlas, name: str) -> int:
    aid = max(fake.assets, default=0) + 1000
    fake.assets[aid] = {"id": aid, "customId": f"A{aid:06d}", "name": name, "archived": False}
    return aid


def fill_free_tier(fake: FakeAtlas) -> None:
    for n in range(FREE_ACTIVE_WORK_ORDERS):
        fake.work_orders[5000 + n] = {"id": 5000 + n, "status": "OPEN", "description": "x"}


# -- the whole happy path ------------------------------------------------------------------
async def test_atlas_uploads_links_the_asset_and_creates_once(
    fake: FakeAtlas, store: AtlasCmms, photo: AttachmentRef
) -> None:
    fake.license("FILE_ATTACHMENTS")
    fake.storage_configured = True
    conveyor = add_asset(fake, "conveyor-1")
    add_asset(fake, "conveyor-10")  # a near name: `eq`, not `cn`
    k = key()
    ref = await store.open(order(k, [photo]))
    assert ref.created and ref.system == "atlas"
    (wo,) = fake.work_orders.values()
    assert ref.id == f"ATLAS-{wo['id']}" and wo["customId"] == "WO000001"
    assert wo["asset"]["id"] == conveyor
    assert wo["priority"] == "HIGH" and wo["dueDate"] == "2026-11-27T00:00:00.000+00:00"
    (file_id,) = [f["id"] for f in wo["files"]]
    assert fake.files[file_id]["data"] == PNG
    assert (fake.files[file_id]["type"], fake.files[file_id]["hidden"]) == ("IMAGE", False)
    assert wo["description"].endswith(marker(k))
    again = await store.open(order(k, [photo]))
    assert again.id == ref.id and not again.created and len(fake.work_orders) == 1
    assert len(fake.files) == 1


async def test_atlas_finds_what_a_crashed_attempt_created(
    pool: asyncpg.Pool, fake: FakeAtlas, store: AtlasCmms
) -> None:
    k = key()
    first = await store.open(order(k))
    # The worker died after Atlas created it but before the link was stored.
    await pool.execute("DELETE FROM cmms_links WHERE external_key = $1", k)
    retry = await store.open(order(k))
    assert retry.id == first.id and not retry.created and len(fake.work_orders) == 1


async def test_an_asset_deleted_in_atlas_is_looked_up_again(
    pool: asyncpg.Pool, fake: FakeAtlas, store: AtlasCmms
) -> None:
    old = add_asset(fake, "conveyor-1")
    await store.open(order(key()))
    del fake.assets[old]  # deleted by someone in Atlas; our link still names it
    new = add_asset(fake, "conveyor-1")
    ref = await store.open(order(key()))
    assert fake.work_orders[int(ref.id.removeprefix("ATLAS-"))]["asset"]["id"] == new
    remembered = await pool.fetchval(
        "SELECT remote_id FROM cmms_assets WHERE asset_id = 'conveyor-1'"
    )
    assert remembered == str(new)


# -- sessions --------------------------------------------------------------------------------
async def test_an_expired_token_answered_403_empty_is_renewed_with_the_refresh_token(
    fake: FakeAtlas, store: AtlasCmms
) -> None:
    await store.open(order(key()))
    fake.expire_tokens()
    await store.open(order(key()))
    assert (fake.sign_ins, fake.refreshes, len(fake.work_orders)) == (1, 1, 2)
    # The server said 403 with nothing in it, and the client took that as "renew".
    assert ("POST", "/work-orders/search", 403) in fake.requests


async def test_a_refused_refresh_token_falls_back_to_signing_in(
    fake: FakeAtlas, store: AtlasCmms
) -> None:
    await store.open(order(key()))
    fake.expire_tokens()
    fake.revoke_refresh_tokens()
    await store.open(order(key()))
    assert (fake.sign_ins, fake.refreshes, len(fake.work_orders)) == (2, 0, 2)
    assert ("POST", "/auth/refresh", 401) in fake.requests


async def test_concurrent_calls_after_expiry_refresh_once_and_never_reuse_a_rotated_token(
    fake: FakeAtlas, store: AtlasCmms
) -> None:
    await store.open(order(key(), asset_id=None))
    fake.expire_tokens()
    refs = await asyncio.gather(*(store.open(order(key(), asset_id=None)) for _ in range(5)))
    assert all(r.created for r in refs) and len(fake.work_orders) == 6
    assert (fake.sign_ins, fake.refreshes) == (1, 1)
    assert not any(path == "/auth/refresh" and status == 401 for _, path, status in fake.requests)


async def test_a_token_near_its_expires_at_is_renewed_before_the_call(
    pool: asyncpg.Pool, fake: FakeAtlas
) -> None:
    fake.access_ttl_s = 20.0  # inside the client's 30 s early-renewal window
    store = AtlasCmms(pool, fake.url, fake.email, fake.password)  # type: ignore[attr-defined]
    try:
        await store.open(order(key(), asset_id=None))
    finally:
        await store.close()
    assert fake.refreshes >= 1 and len(fake.work_orders) == 1
    assert not any(status == 403 for _, _, status in fake.requests)


async def test_atlas_bad_credentials_name_the_problem(pool: asyncpg.Pool, fake: FakeAtlas) -> None:
    store = AtlasCmms(pool, fake.url, "someone@else", "wrong")  # type: ignore[attr-defined]
    try:
        with pytest.raises(AtlasError, match="sign-in answered 403: Invalid credentials"):
            await store.open(order(key()))
    finally:
        await store.close()


# -- refusals --------------------------------------------------------------------------------
async def test_an_upload_without_the_licence_is_a_refusal_with_the_servers_message(
    fake: FakeAtlas, store: AtlasCmms, photo: AttachmentRef
) -> None:
    with pytest.raises(AtlasRefusedError, match="You need a license to add a file") as info:
        await store.open(order(key(), [photo]))
    assert info.value.kind == "licence" and not fake.work_orders


async def test_an_upload_without_storage_is_a_refusal(
    fake: FakeAtlas, store: AtlasCmms, photo: AttachmentRef
) -> None:
    fake.license("FILE_ATTACHMENTS")
    with pytest.raises(AtlasRefusedError, match="MinIO is not configured") as info:
        await store.open(order(key(), [photo]))
    assert info.value.kind == "storage"


async def test_the_full_free_tier_is_a_refusal_naming_the_limit(
    fake: FakeAtlas, store: AtlasCmms
) -> None:
    fill_free_tier(fake)
    with pytest.raises(AtlasRefusedError, match="Free Limit of 30 incomplete") as info:
        await store.open(order(key()))
    assert info.value.kind == "free tier" and len(fake.work_orders) == FREE_ACTIVE_WORK_ORDERS


async def test_a_role_without_permission_is_a_refusal_but_an_expired_token_is_not(
    fake: FakeAtlas, store: AtlasCmms
) -> None:
    fake.can_create_work_orders = False
    fake.expire_tokens()  # both are 403 in Atlas: one with a message, one empty
    with pytest.raises(AtlasRefusedError, match="Access denied") as info:
        await store.open(order(key(), asset_id=None))
    assert info.value.kind == "forbidden"


async def test_the_upload_rate_limit_is_retried_not_refused(
    tmp_path: Path, fake: FakeAtlas, store: AtlasCmms
) -> None:
    fake.license("FILE_ATTACHMENTS")
    fake.storage_configured = True
    photos = []
    for n in range(21):
        (tmp_path / f"p{n}.png").write_bytes(PNG)
        photos.append(
            AttachmentRef(
                name=f"p{n}.png", content_type="image/png", path=str(tmp_path / f"p{n}.png")
            )
        )
    k = key()
    with pytest.raises(AtlasError, match="answered 429: Rate limit exceeded") as info:
        await store.open(order(k, photos))
    assert not isinstance(info.value, AtlasRefusedError) and len(fake.files) == 20
    # The retry (after the limiter's minute) reuses the 20 files it already uploaded.
    fake._uploads.clear()
    ref = await store.open(order(k, photos))
    assert ref.created and len(fake.files) == 21
    assert len(fake.work_orders[int(ref.id.removeprefix("ATLAS-"))]["files"]) == 21


# -- what Atlas does to text ---------------------------------------------------------------
async def test_markers_survive_html_cleaning_case_folding_and_wildcards(
    pool: asyncpg.Pool, fake: FakeAtlas, store: AtlasCmms
) -> None:
    # Keys that Atlas would mangle (&, <, >) or confuse (case, % and _): each finds its own.
    keys = ["wf/A&B<c>%_x", "wf/a&b<C>%_X", "wf/a&b<c>%ax"]
    first = [await store.open(order(k)) for k in keys]
    assert len({r.id for r in first}) == 3
    await pool.execute("DELETE FROM cmms_links WHERE external_key = ANY($1)", keys)
    again = [await store.open(order(k)) for k in keys]
    assert [r.id for r in again] == [r.id for r in first] and not any(r.created for r in again)
    assert len(fake.work_orders) == 3


async def test_a_long_description_is_cut_to_atlas_limit_with_a_note_and_kept_whole_here(
    pool: asyncpg.Pool, fake: FakeAtlas, store: AtlasCmms
) -> None:
    # '&' is stored as '&amp;': 3000 of them are 15000 stored characters.
    text = "Report line & more\n" * 700
    k = key()
    ref = await store.open(order(k, description=text, asset_id=None))
    wo = fake.work_orders[int(ref.id.removeprefix("ATLAS-"))]
    assert len(wo["description"]) <= 10_000
    assert "cut to fit Atlas's 10000-character description" in wo["description"]
    assert wo["description"].endswith(marker(k))
    row = await pool.fetchrow(
        "SELECT description, truncated FROM cmms_links WHERE external_key = $1", k
    )
    assert row["description"] == text and row["truncated"] is True
    # Found again by its marker, though the text before it was cut.
    await pool.execute("DELETE FROM cmms_links WHERE external_key = $1", k)
    assert (await store.open(order(k, description=text, asset_id=None))).id == ref.id


# -- assets ----------------------------------------------------------------------------------
async def test_without_an_atlas_asset_the_work_order_names_ours_and_none_is_created(
    fake: FakeAtlas, store: AtlasCmms
) -> None:
    ref = await store.open(order(key()))
    wo = fake.work_orders[int(ref.id.removeprefix("ATLAS-"))]
    assert wo["asset"] is None and not fake.assets
    assert "FactoryLM asset: conveyor-1 (no Atlas asset of that name)" in wo["description"]


async def test_assets_are_created_when_configured_once_and_remembered(
    pool: asyncpg.Pool, fake: FakeAtlas
) -> None:
    url = fake.url  # type: ignore[attr-defined]
    first = AtlasCmms(pool, url, fake.email, fake.password, create_assets=True)
    try:
        await first.open(order(key()))
        await first.open(order(key()))
    finally:
        await first.close()
    (asset,) = fake.assets.values()
    assert asset["name"] == "conveyor-1"
    assert [wo["asset"]["id"] for wo in fake.work_orders.values()] == [asset["id"]] * 2
    searches = sum(1 for _, path, _ in fake.requests if path == "/assets/search")
    assert searches == 1
    # Another worker process: the link is in the database, no lookup at all.
    second = AtlasCmms(pool, url, fake.email, fake.password, create_assets=True)
    try:
        await second.open(order(key()))
    finally:
        await second.close()
    assert sum(1 for _, path, _ in fake.requests if path == "/assets/search") == 1
    assert len(fake.assets) == 1


async def test_an_asset_atlas_refuses_to_create_leaves_the_work_order_in_atlas_naming_it(
    pool: asyncpg.Pool, fake: FakeAtlas
) -> None:
    for n in range(FREE_ASSETS):
        add_asset(fake, f"other-{n}")
    url = fake.url  # type: ignore[attr-defined]
    store = AtlasCmms(pool, url, fake.email, fake.password, create_assets=True)
    try:
        ref = await store.open(order(key()))
    finally:
        await store.close()
    assert ref.created and ref.system == "atlas" and len(fake.assets) == FREE_ASSETS
    wo = fake.work_orders[int(ref.id.removeprefix("ATLAS-"))]
    assert wo["asset"] is None
    assert (
        "FactoryLM asset: conveyor-1 (no Atlas asset of that name; Atlas refused to create it: "
        "You need a license to add a new asset. Free Limit reached: 50)"
    ) in wo["description"]
    assert await pool.fetchval("SELECT count(*) FROM cmms_assets") == 0


def test_atlas_settings_must_be_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORYLM_CMMS", "atlas")
    with pytest.raises(SettingsError, match="FACTORYLM_ATLAS_URL"):
        load_settings()
