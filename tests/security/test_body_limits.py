"""Finding 6: every webhook read its whole body before checking the signature, chunked photo
uploads were spooled in full, and huge images were decoded. Now bodies are capped while they
stream in (413 before the signature check), and an image's pixel count is checked from its
header before any pixel is decoded."""

from __future__ import annotations

import asyncio
import io
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.client import Client

from api_rig import ApiRig, api_rig
from factorylm.api_tokens import Role
from factorylm.photos.images import PhotoTooLarge, check_image
from factorylm.settings import Settings

MIB = 1024 * 1024


@pytest.fixture
async def rig(tmp_path: Path, settings: Settings, client: Client) -> AsyncIterator[ApiRig]:
    # A configured webhook secret: the webhook then reads bodies (to check their signature).
    async with api_rig(
        tmp_path, settings, client, twilio_auth_token=SecretStr("tw-test-secret")
    ) as rig:
        yield rig


async def test_a_declared_huge_webhook_body_is_refused_before_it_is_read(rig: ApiRig) -> None:
    async with rig.http() as http:
        response = await http.post(
            "/webhooks/twilio/whatsapp",
            content=b"x" * (2 * MIB),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 413 and "at most 64 KiB" in response.json()["error"]


async def _stream_until_answered(
    port: int, path: str, chunk: bytes, most: int
) -> tuple[int, bytes]:
    """Send a chunked body until the server answers (or `most` bytes went out); returns the
    bytes sent and the answer's first line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
    )
    answer = asyncio.ensure_future(reader.readline())
    sent = 0
    try:
        while not answer.done() and sent < most:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
            sent += len(chunk)
            await asyncio.sleep(0)  # let the answer arrive between chunks
    except ConnectionError:
        pass  # the server hung up on the rest: what we want
    status_line = await asyncio.wait_for(answer, 10)
    writer.close()
    return sent, status_line


async def test_a_chunked_webhook_body_is_cut_off_at_the_cap(rig: ApiRig) -> None:
    sent, status = await _stream_until_answered(
        rig.settings.api_port, "/webhooks/twilio/whatsapp", b"a" * 16384, most=64 * MIB
    )
    assert status.startswith(b"HTTP/1.1 413")
    assert sent < 8 * MIB, f"{sent} bytes were taken before the refusal"


async def test_a_chunked_photo_upload_is_cut_off_at_the_photo_cap(rig: ApiRig) -> None:
    token = await rig.token(Role.UPLOADER)
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.settings.api_port)
    writer.write(
        (
            "POST /photos HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"Authorization: Bearer {token}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
        ).encode()
    )
    part = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
        b"Content-Type: image/png\r\n\r\n"
    )
    writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
    answer = asyncio.ensure_future(reader.readline())
    sent, cap = 0, rig.settings.photo_max_bytes
    chunk = b"z" * 65536
    try:
        while not answer.done() and sent < cap * 8:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
            sent += len(chunk)
            await asyncio.sleep(0)
    except ConnectionError:
        pass
    status = await asyncio.wait_for(answer, 10)
    writer.close()
    assert status.startswith(b"HTTP/1.1 413")
    assert sent < cap * 2


def _png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring width×height grey pixels, with a small zlib stream: a few
    KB on the wire, gigabytes once decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    raw = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * width
    data = b"".join(raw.compress(row) for _ in range(64)) + raw.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("width", "height", "said"),
    [
        (9_000, 8_000, "72 megapixels"),  # past our limit, below Pillow's own bomb warning
        (20_000, 20_000, "too many pixels"),  # past Pillow's limit too
    ],
)
def test_an_image_with_too_many_pixels_is_refused_without_decoding(
    width: int, height: int, said: str
) -> None:
    bomb = _png_bomb(width, height)
    assert len(bomb) < 200_000
    with pytest.raises(PhotoTooLarge, match=said):
        check_image(bomb, 10 * MIB, max_pixels=50_000_000)


async def test_the_upload_endpoint_answers_a_pixel_bomb_with_413(rig: ApiRig) -> None:
    token = await rig.token(Role.UPLOADER)
    async with rig.http(token) as http:
        response = await http.post(
            "/photos",
            files={"image": ("b.png", io.BytesIO(_png_bomb(9_000, 8_000)), "image/png")},
        )
    assert response.status_code == 413 and "megapixels" in response.json()["error"]


def test_decodes_beyond_the_concurrency_limit_wait_their_turn() -> None:
    """A burst of uploads queues for the decoder instead of decoding all at once."""
    import threading

    from factorylm.photos import images

    out = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (320, 240), (10, 120, 10)).save(out, "PNG")
    photo = out.getvalue()
    images.limit_decodes(1)
    try:
        done = threading.Event()
        with images._DECODING:  # the one decode slot is taken

            def decode() -> None:
                check_image(photo, MIB)
                done.set()

            worker = threading.Thread(target=decode)
            worker.start()
            assert not done.wait(0.5), "decoded while the only slot was taken"
        assert done.wait(10), "never decoded once the slot was free"
        worker.join()
    finally:
        images.limit_decodes(2)
