"""Work orders in the built-in store and in Atlas CMMS (httpx against a local Atlas API)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import asyncpg
import pytest

from dev.fakes.atlas import FakeAtlas
from dev.fakes.server import LocalServer
from factorylm.cmms.atlas import AtlasCmms, AtlasError
from factorylm.cmms.builtin import BuiltinCmms
from factorylm.models.work_orders import AttachmentRef, OpenWorkOrderInput, WorkOrderPriority
from factorylm.settings import SettingsError, load_settings

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def order(key: str, attachments: list[AttachmentRef] | None = None) -> OpenWorkOrderInput:
    return OpenWorkOrderInput(
        external_key=key,
        title="Bearing noise on conveyor-1",
        description="Vibration +4σ",
        priority=WorkOrderPriority.HIGH,
        asset_id="conveyor-1",
        due_date=date(2026, 11, 27),
        attachments=attachments or [],
    )


@pytest.fixture
def photo(tmp_path: Path) -> AttachmentRef:
    path = tmp_path / "bearing.png"
    path.write_bytes(PNG)
    return AttachmentRef(name="bearing.png", content_type="image/png", path=str(path))


async def test_builtin_is_idempotent_and_keeps_every_field(
    pool: asyncpg.Pool, photo: AttachmentRef
) -> None:
    store = BuiltinCmms(pool)
    key = f"wf/{uuid.uuid4()}"
    first = await store.open(order(key, [photo]))
    again = await store.open(order(key, [photo]))
    assert first.created and not again.created and first.id == again.id
    row = await pool.fetchrow("SELECT * FROM work_orders WHERE external_key = $1", key)
    assert (row["priority"], row["status"], row["asset_id"]) == ("HIGH", "OPEN", "conveyor-1")
    assert row["due_date"] == date(2026, 11, 27)
    assert json.loads(row["attachments"]) == [photo.model_dump()]


@pytest.fixture
async def atlas() -> AsyncIterator[tuple[FakeAtlas, str]]:
    fake = FakeAtlas()
    server = LocalServer(fake.app())
    await server.start()
    yield fake, server.url
    await server.stop()


async def test_atlas_signs_in_uploads_and_creates_once(
    pool: asyncpg.Pool, atlas: tuple[FakeAtlas, str], photo: AttachmentRef
) -> None:
    fake, url = atlas
    store = AtlasCmms(pool, url, fake.email, fake.password)
    key = f"wf/{uuid.uuid4()}"
    try:
        ref = await store.open(order(key, [photo]))
        assert ref.created and ref.system == "atlas"
        (wo,) = fake.work_orders.values()
        assert ref.id == f"ATLAS-{wo['id']}"
        assert wo["priority"] == "HIGH" and wo["dueDate"] == "2026-11-27"
        (file_id,) = [f["id"] for f in wo["files"]]
        assert fake.files[file_id]["data"] == PNG
        assert fake.files[file_id]["type"] == "IMAGE"
        again = await store.open(order(key, [photo]))
        assert again.id == ref.id and not again.created and len(fake.work_orders) == 1
    finally:
        await store.close()


async def test_atlas_signs_in_again_when_the_token_expires(
    pool: asyncpg.Pool, atlas: tuple[FakeAtlas, str]
) -> None:
    fake, url = atlas
    store = AtlasCmms(pool, url, fake.email, fake.password)
    try:
        await store.open(order(f"wf/{uuid.uuid4()}"))
        fake.expire_tokens()
        await store.open(order(f"wf/{uuid.uuid4()}"))
        assert fake.sign_ins == 2 and len(fake.work_orders) == 2
    finally:
        await store.close()


async def test_atlas_finds_what_a_crashed_attempt_created(
    pool: asyncpg.Pool, atlas: tuple[FakeAtlas, str]
) -> None:
    fake, url = atlas
    store = AtlasCmms(pool, url, fake.email, fake.password)
    key = f"wf/{uuid.uuid4()}"
    try:
        first = await store.open(order(key))
        # The worker died after Atlas created it but before the link was stored.
        await pool.execute("DELETE FROM cmms_links WHERE external_key = $1", key)
        retry = await store.open(order(key))
        assert retry.id == first.id and not retry.created and len(fake.work_orders) == 1
    finally:
        await store.close()


async def test_atlas_bad_credentials_name_the_problem(
    pool: asyncpg.Pool, atlas: tuple[FakeAtlas, str]
) -> None:
    _, url = atlas
    store = AtlasCmms(pool, url, "someone@else", "wrong")
    try:
        with pytest.raises(AtlasError, match="sign-in answered 403"):
            await store.open(order(f"wf/{uuid.uuid4()}"))
    finally:
        await store.close()


def test_atlas_settings_must_be_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTORYLM_CMMS", "atlas")
    with pytest.raises(SettingsError, match="FACTORYLM_ATLAS_URL"):
        load_settings()
