"""The photo store: images live here, outside Temporal; workflows carry `PhotoRef`s.

The filesystem store is the default (under the state dir). An S3-compatible store is an
extension point: implement `PhotoStore` over an S3 client (put/get by key, `local_copy`
downloading to a cache for the CMMS upload) and select it in `photo_store_for`; no S3 client
is a dependency today, so FACTORYLM_PHOTO_STORE=s3 is refused with that message.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Protocol

from factorylm.models.photos import PhotoRef
from factorylm.photos.images import EXTENSIONS
from factorylm.settings import Settings


class PhotoStoreError(RuntimeError):
    """The photo store is misconfigured or unreachable."""


class PhotoStore(Protocol):
    kind: str

    async def put(self, photo_id: str, data: bytes, content_type: str) -> PhotoRef: ...

    async def read(self, ref: PhotoRef) -> bytes: ...

    def local_path(self, ref: PhotoRef) -> Path:
        """A file path the CMMS can attach (AttachmentRef.path)."""
        ...


class FilesystemPhotoStore:
    kind = "filesystem"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _write(self, photo_id: str, data: bytes, content_type: str) -> Path:
        ext = EXTENSIONS.get(content_type, "bin")
        # Two hex characters of fan-out keep directories small on a plant with years of photos.
        folder = self.root / photo_id[-2:]
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{photo_id}.{ext}"
        # Write, fsync, rename: an accepted photo is complete on disk or not there at all.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{photo_id}.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return target

    async def put(self, photo_id: str, data: bytes, content_type: str) -> PhotoRef:
        path = await asyncio.to_thread(self._write, photo_id, data, content_type)
        return PhotoRef(
            photo_id=photo_id,
            storage=self.kind,
            location=str(path.relative_to(self.root)),
            content_type=content_type,
            size_bytes=len(data),
        )

    def local_path(self, ref: PhotoRef) -> Path:
        if ref.storage != self.kind:
            raise PhotoStoreError(f"photo {ref.photo_id} is in the {ref.storage} store, not here")
        path = (self.root / ref.location).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise PhotoStoreError(f"photo {ref.photo_id} points outside the photo store")
        return path

    async def read(self, ref: PhotoRef) -> bytes:
        return await asyncio.to_thread(self.local_path(ref).read_bytes)


def photo_store_for(settings: Settings) -> PhotoStore:
    if settings.photo_store == "s3":
        raise PhotoStoreError(
            "FACTORYLM_PHOTO_STORE=s3 is not available in this build (no S3 client installed); "
            "use the filesystem store (the default) — see docs/photos.md"
        )
    return FilesystemPhotoStore(settings.photo_dir or settings.state_dir / "photos")
