"""Is it a photo we can file? The type comes from the bytes (never from the name or the
client's header), and the whole image must decode: a truncated upload is refused at the door,
not discovered later by the vision model."""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# The formats both vision models (Gemini and Claude) accept.
ACCEPTED = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class PhotoRejected(ValueError):
    """The upload cannot be filed; the message tells the sender why (HTTP 415 or 413)."""

    status = 415


class PhotoTooLarge(PhotoRejected):
    status = 413


@dataclass(frozen=True)
class CheckedImage:
    content_type: str
    width: int
    height: int


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def too_large(size: int, limit: int) -> PhotoTooLarge:
    return PhotoTooLarge(
        f"the photo is {size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB — "
        "send it at a lower resolution"
    )


# A photo is decoded whole (hundreds of MB for a large one): a few at a time per process, so
# a burst of uploads queues instead of exhausting memory.
_DECODING = threading.BoundedSemaphore(2)


def limit_decodes(concurrent: int) -> None:
    """How many images this process decodes at once (FACTORYLM_PHOTO_DECODE_CONCURRENCY)."""
    global _DECODING
    _DECODING = threading.BoundedSemaphore(concurrent)


def check_image(data: bytes, max_bytes: int, max_pixels: int = 50_000_000) -> CheckedImage:
    """Raise PhotoRejected with a reason a technician can act on; blocking (decodes)."""
    if len(data) > max_bytes:
        raise too_large(len(data), max_bytes)
    if not data:
        raise PhotoRejected("the upload is empty: attach the photo itself")
    kind = _sniff(data)
    if kind is None:
        raise PhotoRejected(
            "this is not a photo FactoryLM can read: send a JPEG, PNG or WebP image"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                # The header's size, before any pixel is decoded: a small file can declare
                # a huge image (a decompression bomb).
                width, height = image.size
                if width * height > max_pixels:
                    raise PhotoTooLarge(
                        f"the image is {width}×{height} ({width * height / 1e6:.0f} megapixels);"
                        f" the limit is {max_pixels / 1e6:.0f} — send it at a lower resolution"
                    )
                image.verify()  # checksums and structure
            with _DECODING, Image.open(io.BytesIO(data)) as image:
                image.load()  # every pixel: catches a photo cut off in transfer
    except PhotoRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PhotoTooLarge(f"the image has too many pixels to analyse ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PhotoRejected(
            f"the {kind} image is corrupt or incomplete ({exc}); take or send it again"
        ) from exc
    return CheckedImage(ACCEPTED[kind], width, height)
