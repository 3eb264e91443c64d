"""The Cartographer: maps a repository at a commit and ranks the files that matter to a card.

The map lists every file with its size; a Python file adds its modules, classes, functions and
imports (from `ast`, never by running it), another text file its Markdown headings or first
line. Maps are cached by (repository, commit) in `monkey_repo_maps`. Ranking puts first the
files the card names (by path or file name), then the rest by embedding similarity of their
chunks to the card (the product's fastembed model; chunks are cached per blob in
`monkey_file_chunks`, so an unchanged file is embedded once whatever the commit).
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import asyncpg
import numpy as np
from temporalio import activity

from activities.monkey_workspace import GitWorkspace
from factorylm.embeddings import Embedder, to_pgvector
from factorylm.models.monkey import MapRepositoryInput, RelevantFile, RepoContext, SprintCard

MAX_FILES = 3000
MAX_READ_BYTES = 200_000
MAP_TEXT_LIMIT = 12_000
CHUNK_CHARS = 1200
MAX_CHUNKS_PER_FILE = 12
MAX_EMBEDDED_FILES = 400
TOP_FILES = 8
_TEXT_SUFFIXES = {
    ".py", ".md", ".txt", ".rst", ".toml", ".yaml", ".yml", ".json", ".cfg", ".ini", ".sh",
    ".sql", ".js", ".ts", ".html", ".css", ".c", ".h", ".go", ".rs", ".java",
}  # fmt: skip


def card_text(card: SprintCard) -> str:
    return "\n".join([card.name, card.description, *card.checklist])


def python_entry(path: str, source: str) -> dict[str, Any]:
    module = ".".join(PurePosixPath(path).with_suffix("").parts).removesuffix(".__init__")
    entry: dict[str, Any] = {"module": module}
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError) as exc:
        entry["error"] = f"does not parse: {exc.__class__.__name__}"
        return entry
    classes, functions, imports = [], [], []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            methods = [
                n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            ]
            classes.append({"name": node.name, "methods": methods[:30]})
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions.append(node.name)
    for found in ast.walk(tree):
        if isinstance(found, ast.Import):
            imports += [alias.name for alias in found.names]
        elif isinstance(found, ast.ImportFrom) and found.module:
            imports.append(("." * found.level) + found.module)
    entry.update(classes=classes, functions=functions, imports=sorted(set(imports))[:40])
    return entry


def text_entry(source: str) -> dict[str, Any]:
    headings = [line.strip() for line in source.splitlines() if re.match(r"^#{1,3} \S", line)]
    if headings:
        return {"headings": headings[:12]}
    first = next((line.strip() for line in source.splitlines() if line.strip()), "")
    return {"first_line": first[:160]}


def build_map(workspace: GitWorkspace, commit: str) -> list[dict[str, Any]]:
    """Blocking: every file at the commit with what `ast` or its text says about it."""
    files = []
    for path, blob, size in workspace.tree(commit)[:MAX_FILES]:
        entry: dict[str, Any] = {"path": path, "blob": blob, "size": size}
        text = workspace.read(commit, path, MAX_READ_BYTES) if size <= MAX_READ_BYTES else None
        if text is None:
            entry["kind"] = "binary or large"
        elif path.endswith(".py"):
            entry.update(kind="python", **python_entry(path, text))
        else:
            entry.update(kind="text", **text_entry(text))
        files.append(entry)
    return files


def render_map(files: list[dict[str, Any]], limit: int = MAP_TEXT_LIMIT) -> str:
    lines = []
    for f in files:
        parts = [f"{f['path']} ({f['size']} B)"]
        if f.get("kind") == "python":
            if f.get("classes"):
                parts.append(
                    "classes "
                    + ", ".join(f"{c['name']}({', '.join(c['methods'][:8])})" for c in f["classes"])
                )
            if f.get("functions"):
                parts.append("functions " + ", ".join(f["functions"][:15]))
            if f.get("imports"):
                parts.append("imports " + ", ".join(f["imports"][:12]))
            if f.get("error"):
                parts.append(f["error"])
        elif f.get("headings"):
            parts.append("headings " + " | ".join(f["headings"][:6]))
        elif f.get("first_line"):
            parts.append(f"starts {f['first_line']!r}")
        lines.append("; ".join(parts))
    text = "\n".join(lines)
    return text if len(text) <= limit else text[:limit] + "\n…(map truncated)"


def named_on_card(files: list[dict[str, Any]], text: str) -> list[str]:
    """Paths the card mentions: the whole path, or a file name of more than 3 characters."""
    found = []
    for f in files:
        path = f["path"]
        name = PurePosixPath(path).name
        if path in text or (len(name) > 3 and re.search(rf"(?<![\w/.-]){re.escape(name)}\b", text)):
            found.append(path)
    return found


def chunks(text: str) -> list[str]:
    return [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)][
        :MAX_CHUNKS_PER_FILE
    ]


@dataclass(frozen=True)
class RepoMap:
    commit: str
    files: list[dict[str, Any]]
    cached: bool


class Cartographer:
    def __init__(self, pool: asyncpg.Pool, workspace: GitWorkspace, embedder: Embedder) -> None:
        self._pool = pool
        self._workspace = workspace
        self._embedder = embedder

    async def repo_map(self, commit: str) -> RepoMap:
        row = await self._pool.fetchrow(
            "SELECT files FROM monkey_repo_maps WHERE repo = $1 AND commit_sha = $2",
            self._workspace.shown,
            commit,
        )
        if row is not None:
            return RepoMap(commit, json.loads(row["files"]), cached=True)
        files = await asyncio.to_thread(build_map, self._workspace, commit)
        await self._pool.execute(
            """INSERT INTO monkey_repo_maps (repo, commit_sha, files) VALUES ($1, $2, $3)
               ON CONFLICT (repo, commit_sha) DO NOTHING""",
            self._workspace.shown,
            commit,
            json.dumps(files),
        )
        return RepoMap(commit, files, cached=False)

    async def _file_vectors(
        self, commit: str, files: list[dict[str, Any]]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Each text file's chunk embeddings, from the cache or embedded now."""
        wanted = [
            f
            for f in files
            if f.get("kind") in ("python", "text")
            and PurePosixPath(f["path"]).suffix in _TEXT_SUFFIXES
        ][:MAX_EMBEDDED_FILES]
        blobs = sorted({f["blob"] for f in wanted})
        rows = await self._pool.fetch(
            """SELECT blob_sha, embedding::text AS v FROM monkey_file_chunks
               WHERE blob_sha = ANY($1::text[]) AND model = $2""",
            blobs,
            self._embedder.model_name,
        )
        vectors: dict[str, list[list[float]]] = {}
        for r in rows:
            vectors.setdefault(r["blob_sha"], []).append(json.loads(r["v"]))
        missing = [f for f in wanted if f["blob"] not in vectors]
        pieces: list[tuple[str, int, str]] = []
        for f in missing:
            text = await asyncio.to_thread(self._workspace.read, commit, f["path"], MAX_READ_BYTES)
            for index, chunk in enumerate(chunks(f"{f['path']}\n{text or ''}")):
                pieces.append((f["blob"], index, chunk))
        if pieces:
            embedded = await self._embedder.embed_async([p[2] for p in pieces])
            await self._pool.executemany(
                """INSERT INTO monkey_file_chunks (blob_sha, chunk_index, embedding, model)
                   VALUES ($1, $2, $3::vector, $4) ON CONFLICT DO NOTHING""",
                [
                    (blob, index, to_pgvector(vector), self._embedder.model_name)
                    for (blob, index, _), vector in zip(pieces, embedded, strict=True)
                ],
            )
            for (blob, _, _), vector in zip(pieces, embedded, strict=True):
                vectors.setdefault(blob, []).append([float(x) for x in vector])
        by_path = {}
        for f in wanted:
            if f["blob"] in vectors:
                by_path[f["path"]] = np.asarray(vectors[f["blob"]], dtype=np.float32)
        return by_path

    async def context(self, card: SprintCard, commit: str) -> RepoContext:
        # Another worker process may have prepared the branch: the commit must be here too.
        await asyncio.to_thread(self._workspace.ensure_clone)
        repo_map = await self.repo_map(commit)
        text = card_text(card)
        named = named_on_card(repo_map.files, text)
        relevant = [RelevantFile(path=p, score=1.0, reason="named on the card") for p in named]
        vectors = await self._file_vectors(commit, repo_map.files)
        if vectors:
            query = self._embedder.embed_one(text)
            scored = sorted(
                (
                    (float(np.max(v @ query)), path)
                    for path, v in vectors.items()
                    if path not in named
                ),
                reverse=True,
            )
            relevant += [
                RelevantFile(path=path, score=round(score, 4), reason="similar to the card")
                for score, path in scored[: max(0, TOP_FILES - len(relevant))]
            ]
        return RepoContext(
            commit=commit,
            files=len(repo_map.files),
            map_text=render_map(repo_map.files),
            relevant=relevant[:TOP_FILES] if len(named) <= TOP_FILES else relevant,
            cached=repo_map.cached,
        )


class CartographerActivities:
    def __init__(self, cartographer: Cartographer) -> None:
        self._cartographer = cartographer

    @activity.defn(name="monkey_map_repository")
    async def map_repository(self, req: MapRepositoryInput) -> RepoContext:
        return await self._cartographer.context(req.card, req.commit)
