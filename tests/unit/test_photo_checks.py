"""Photo checks without services: image validation, the filesystem store, asset matching,
and the offline analyst (no keys: it says so and asks for a person)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from photo_samples import jpeg_bytes, png_bytes, webp_bytes

from factorylm.models.photos import PhotoRef
from factorylm.photos.assets import asset_in_text, exact_asset
from factorylm.photos.images import PhotoRejected, PhotoTooLarge, check_image
from factorylm.photos.store import FilesystemPhotoStore, PhotoStoreError, photo_store_for
from factorylm.photos.vision import Image, PhotoAnalyst
from factorylm.settings import load_settings

KNOWN = ["conveyor-1", "press-1", "pump-1", "pump-10"]


@pytest.mark.parametrize(
    ("data", "kind"),
    [(png_bytes(), "image/png"), (jpeg_bytes(), "image/jpeg"), (webp_bytes(), "image/webp")],
)
def test_real_images_are_accepted_with_their_type_and_size(data: bytes, kind: str) -> None:
    checked = check_image(data, 1_000_000)
    assert checked.content_type == kind and checked.width > 0 and checked.height > 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"%PDF-1.7 not a photo", "JPEG, PNG or WebP"),
        (png_bytes()[:-40], "corrupt or incomplete"),
        (jpeg_bytes()[:200], "corrupt or incomplete"),
    ],
)
def test_not_an_image_or_corrupt_is_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(PhotoRejected) as caught:
        check_image(data, 1_000_000)
    assert caught.value.status == 415 and reason in str(caught.value)


def test_over_the_limit_is_413_before_decoding() -> None:
    with pytest.raises(PhotoTooLarge) as caught:
        check_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 5000, 4096)
    assert caught.value.status == 413 and "limit" in str(caught.value)


def test_store_writes_whole_files_and_refuses_paths_outside(tmp_path: Path) -> None:
    store = FilesystemPhotoStore(tmp_path / "photos")
    data = jpeg_bytes()
    ref = asyncio.run(store.put("ph-0123456789abcdef", data, "image/jpeg"))
    assert ref.size_bytes == len(data) and ref.location.endswith(".jpg")
    assert asyncio.run(store.read(ref)) == data
    assert not [p for p in (tmp_path / "photos").rglob(".*")]  # no temp files left behind
    evil = PhotoRef(
        photo_id="x",
        storage="filesystem",
        location="../../etc/passwd",
        content_type="",
        size_bytes=1,
    )
    with pytest.raises(PhotoStoreError):
        store.local_path(evil)


def test_store_defaults_under_the_state_dir_and_s3_says_it_is_not_available(
    tmp_path: Path,
) -> None:
    store = photo_store_for(load_settings(state_dir=tmp_path))
    assert isinstance(store, FilesystemPhotoStore) and store.root == tmp_path / "photos"
    with pytest.raises(PhotoStoreError, match="s3 is not available"):
        photo_store_for(load_settings(photo_store="s3"))


def test_asset_tags_match_whole_tokens_in_any_spelling() -> None:
    assert exact_asset("PUMP 1", KNOWN) == "pump-1"
    assert exact_asset("pump_10", KNOWN) == "pump-10"
    assert exact_asset("pump-2", KNOWN) is None
    assert asset_in_text("SN 4411 / ASSET PUMP-10 / 7.5 kW", KNOWN) == "pump-10"
    assert asset_in_text("Press 1 hydraulic unit", KNOWN) == "press-1"
    assert asset_in_text("pump-100", KNOWN) is None
    assert asset_in_text(None, KNOWN) is None


def test_offline_analyst_says_so_and_asks_for_a_person() -> None:
    settings = load_settings(anthropic_api_key="", gemini_api_key="")
    analyst = PhotoAnalyst(settings, None)
    assert analyst.offline
    result = asyncio.run(analyst.analyse(Image(png_bytes(), "image/png"), "leak", KNOWN, None))
    assert result.needs_manual_review and result.generated_by == "offline rules"
    assert "offline" in result.finding.visible_issue and "leak" in result.finding.visible_issue
    assert "no vision model is configured" in result.review_reason
