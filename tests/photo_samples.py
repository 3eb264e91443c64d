"""Real image files for the photo tests: PNG written by hand (zlib + struct, no imaging
library involved, so the product's decoder is checked against an independent encoder) and
JPEG/WebP through Pillow."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def png_bytes(width: int = 32, height: int = 24, seed: int = 0) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: none
        for x in range(width):
            rows += bytes(((x * 7 + seed) % 256, (y * 11 + seed) % 256, (x * y + seed) % 256))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows)))
        + chunk(b"IEND", b"")
    )


def jpeg_bytes(
    width: int = 64, height: int = 48, color: tuple[int, int, int] = (180, 40, 30)
) -> bytes:
    image = Image.new("RGB", (width, height), color)
    for x in range(0, width, 4):
        image.putpixel((x, height // 2), (255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def webp_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 10)).save(out, format="WEBP")
    return out.getvalue()
