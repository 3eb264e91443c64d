"""Equipment manuals as searchable, citable excerpts: PDF, Markdown and plain text.

A manual is split into chunks that never cross a page (PDF) or a section (Markdown heading),
so each excerpt cites exactly where it came from. Chunks overlap so that a sentence cut at a
boundary is whole in one of them. A manual is embedded first and stored in one transaction:
a bad file stores nothing, and adding a file again replaces its previous version.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from factorylm.embeddings import Embedder, to_pgvector
from factorylm.models.agents import ManualExcerpt

# all-MiniLM-L6-v2 was trained on up to 256 word pieces; ~120 words stay well inside that.
CHUNK_WORDS = 120
OVERLAP_WORDS = 30
_MEDIA = {".pdf": "pdf", ".md": "markdown", ".markdown": "markdown", ".txt": "text"}
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


class ManualError(ValueError):
    """A manual cannot be ingested; the message names the file and why. Nothing was stored."""


@dataclass(frozen=True)
class Section:
    page: int | None
    heading: str | None
    text: str


@dataclass(frozen=True)
class Chunk:
    index: int
    page: int | None
    section: str | None
    text: str


@dataclass(frozen=True)
class ManualSummary:
    id: int
    source: str
    title: str
    media_type: str
    pages: int
    chunks: int
    replaced: bool


def _read_pdf(path: Path) -> tuple[str, list[Section]]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ManualError(f"{path.name}: the PDF is encrypted")
        sections = [
            Section(page=number, heading=None, text=page.extract_text() or "")
            for number, page in enumerate(reader.pages, start=1)
        ]
        meta = reader.metadata
        title = str(meta.title) if meta is not None and meta.title else path.stem
    except ManualError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ManualError(f"{path.name}: cannot read the PDF ({exc})") from exc
    if not sections:
        raise ManualError(f"{path.name}: the PDF has no pages")
    return title, sections


def _decode(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManualError(
            f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc


def _read_markdown(path: Path) -> tuple[str, list[Section]]:
    title: str | None = None
    heading: str | None = None
    sections: list[Section] = []
    lines: list[str] = []
    for line in _decode(path).splitlines():
        match = _HEADING.match(line)
        if match:
            sections.append(Section(None, heading, "\n".join(lines)))
            lines = []
            heading = match[2]
            if title is None and len(match[1]) == 1:
                title = heading
        else:
            lines.append(line)
    sections.append(Section(None, heading, "\n".join(lines)))
    return title or path.stem, sections


def read_manual(path: Path) -> tuple[str, str, list[Section]]:
    """(media type, title, sections) of a manual file; ManualError when it cannot be used."""
    media = _MEDIA.get(path.suffix.lower())
    if media is None:
        known = ", ".join(sorted(_MEDIA))
        raise ManualError(f"{path.name}: unsupported file type (use one of {known})")
    if not path.is_file():
        raise ManualError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ManualError(f"{path.name}: the file is empty")
    if media == "pdf":
        title, sections = _read_pdf(path)
    elif media == "markdown":
        title, sections = _read_markdown(path)
    else:
        title, sections = path.stem, [Section(None, None, _decode(path))]
    if not any(s.text.strip() for s in sections):
        what = (
            "no extractable text (a scanned PDF needs OCR first)" if media == "pdf" else "no text"
        )
        raise ManualError(f"{path.name}: {what}")
    return media, title, sections


def chunk_sections(
    sections: list[Section], *, words: int = CHUNK_WORDS, overlap: int = OVERLAP_WORDS
) -> list[Chunk]:
    if not 0 <= overlap < words:
        raise ValueError("overlap must be smaller than the chunk size")
    chunks: list[Chunk] = []
    for section in sections:
        tokens = section.text.split()
        start = 0
        while start < len(tokens):
            piece = tokens[start : start + words]
            chunks.append(Chunk(len(chunks), section.page, section.heading, " ".join(piece)))
            if start + words >= len(tokens):
                break
            start += words - overlap
    return chunks


def citation(source: str, page: int | None, section: str | None) -> str:
    if page is not None:
        return f"{source} p. {page}"
    if section:
        return f"{source} §{section}"
    return source


async def _digest(path: Path) -> str:
    return await asyncio.to_thread(lambda: hashlib.sha256(path.read_bytes()).hexdigest())


class ManualStore:
    def __init__(self, pool: asyncpg.Pool, embedder: Embedder, *, ef_search: int = 100) -> None:
        self._pool = pool
        self._embedder = embedder
        self._ef_search = ef_search

    async def add(self, path: Path) -> ManualSummary:
        return await self._store(path, await _digest(path))

    async def add_if_changed(self, path: Path) -> ManualSummary | None:
        """Add a manual unless the same file is already stored (None then): no re-embedding
        of a manual that has not changed."""
        digest = await _digest(path)
        stored = await self._pool.fetchval(
            "SELECT sha256 FROM manuals WHERE source = $1", path.name
        )
        return None if stored == digest else await self._store(path, digest)

    async def _store(self, path: Path, digest: str) -> ManualSummary:
        # Parsing a PDF is CPU work: off the event loop, like the embedding.
        media, title, sections = await asyncio.to_thread(read_manual, path)
        chunks = chunk_sections(sections)
        # The title and section travel into the embedding: "Bearings" alone says little.
        vectors = await self._embedder.embed_async(
            [f"{title} — {c.section or ''}: {c.text}" for c in chunks]
        )
        pages = max((s.page or 0) for s in sections) or 1
        async with self._pool.acquire() as conn, conn.transaction():
            replaced = await conn.fetchval(
                "DELETE FROM manuals WHERE source = $1 RETURNING id", path.name
            )
            manual_id: int = await conn.fetchval(
                """INSERT INTO manuals (source, title, media_type, sha256, pages, chunk_count)
                   VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
                path.name,
                title,
                media,
                digest,
                pages,
                len(chunks),
            )
            await conn.executemany(
                """INSERT INTO manual_chunks (manual_id, chunk_index, page, section, text,
                       embedding) VALUES ($1, $2, $3, $4, $5, $6::text::vector)""",
                [
                    (manual_id, c.index, c.page, c.section, c.text, to_pgvector(v))
                    for c, v in zip(chunks, vectors, strict=True)
                ],
            )
        return ManualSummary(
            manual_id, path.name, title, media, pages, len(chunks), replaced is not None
        )

    async def search(self, query: str, *, k: int = 3) -> list[ManualExcerpt]:
        vector = to_pgvector((await self._embedder.embed_async([query]))[0])
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL hnsw.ef_search = {int(self._ef_search)}")
            rows = await conn.fetch(
                """SELECT m.source, c.page, c.section, c.text,
                          1 - (c.embedding <=> $1::text::vector) AS similarity
                   FROM manual_chunks c JOIN manuals m ON m.id = c.manual_id
                   ORDER BY c.embedding <=> $1::text::vector LIMIT $2""",
                vector,
                k,
            )
        return [
            ManualExcerpt(
                source=r["source"],
                page=r["page"],
                section=r["section"],
                text=r["text"],
                similarity=max(0.0, min(1.0, float(r["similarity"]))),
                citation=citation(r["source"], r["page"], r["section"]),
            )
            for r in rows
        ]

    async def manuals(self) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._pool.fetch(
            "SELECT source, title, media_type, pages, chunk_count, added_at FROM manuals "
            "ORDER BY source"
        )
        return rows
