"""The Cartographer against a real git repository, the real database and the product's
fastembed model: the map says what `ast` finds, is cached by commit, and ranks the files a
card names first, then the files whose text is like the card's."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from numpy.typing import NDArray

from activities.cartographer import Cartographer
from activities.monkey_workspace import GitWorkspace
from dev.demo.monkey import seed_repository
from factorylm.embeddings import Embedder, get_embedder
from factorylm.models.monkey import SprintCard
from factorylm.settings import Settings

FILES = {
    "plant/conveyor.py": (
        "import math\nfrom dataclasses import dataclass\n\n\n@dataclass\nclass Belt:\n"
        "    speed: float\n\n    def stop(self) -> None:\n        self.speed = 0.0\n\n\n"
        "def belt_speed_from_motor_rpm(rpm: float) -> float:\n"
        "    return rpm * math.pi / 60\n"
    ),
    "plant/boiler.py": (
        "def steam_pressure_alarm(bar: float) -> bool:\n"
        '    """Boiler steam pressure above the relief valve setting."""\n'
        "    return bar > 10.0\n"
    ),
    "docs/operators.md": "# Operator guide\n\n## Approving an action\n\nReply YES.\n",
    "broken.py": "def (:\n",
    "notes.txt": "\n\nfirst real line\nsecond\n",
}


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="factorylm-cartographer-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _push_change(root: Path, remote: Path) -> None:
    work = root / "seed"
    (work / "plant" / "boiler.py").write_text("def relief() -> None:\n    pass\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(root), "GIT_AUTHOR_NAME": "a",
           "GIT_AUTHOR_EMAIL": "a@b", "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@b"}  # fmt: skip
    for args in (["commit", "-qam", "boiler"], ["push", "-q", str(remote), "HEAD:main"]):
        subprocess.run(["git", "-C", str(work), *args], env=env, check=True)


class CountingEmbedder(Embedder):
    """The product's embedder, counting the texts it embeds."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.embedding_model_dir, batch_size=settings.embedding_batch_size)
        self.texts = 0

    def embed(self, texts: Sequence[str], *, batch_size: int | None = None) -> NDArray[np.float32]:
        self.texts += len(texts)
        return super().embed(texts, batch_size=batch_size)


def _card(name: str, description: str) -> SprintCard:
    return SprintCard(id="c1", name=name, description=description, success_checks=["true"])


async def test_the_map_is_what_ast_says_cached_by_commit(
    root: Path, pool: asyncpg.Pool, settings: Settings
) -> None:
    remote = await asyncio.to_thread(seed_repository, root, FILES)
    workspace = GitWorkspace(str(remote), "main", root / "ws")
    await asyncio.to_thread(workspace.ensure_clone)
    commit = workspace.base_commit()
    cartographer = Cartographer(pool, workspace, get_embedder(settings))
    first = await cartographer.repo_map(commit)
    assert not first.cached
    by_path = {f["path"]: f for f in first.files}
    conveyor = by_path["plant/conveyor.py"]
    assert conveyor["module"] == "plant.conveyor"
    assert conveyor["classes"] == [{"name": "Belt", "methods": ["stop"]}]
    assert conveyor["functions"] == ["belt_speed_from_motor_rpm"]
    assert conveyor["imports"] == ["dataclasses", "math"]
    assert "does not parse" in by_path["broken.py"]["error"]
    assert by_path["docs/operators.md"]["headings"] == [
        "# Operator guide",
        "## Approving an action",
    ]
    assert by_path["notes.txt"]["first_line"] == "first real line"
    again = await cartographer.repo_map(commit)
    assert again.cached and again.files == first.files
    # A new commit is a new map.
    await asyncio.to_thread(_push_change, root, remote)
    await asyncio.to_thread(workspace.fetch)
    newer = await cartographer.repo_map(workspace.base_commit())
    assert not newer.cached
    assert {f["path"]: f for f in newer.files}["plant/boiler.py"]["functions"] == ["relief"]


async def test_named_files_first_then_embedding_similarity(
    root: Path, pool: asyncpg.Pool, settings: Settings
) -> None:
    remote = await asyncio.to_thread(seed_repository, root, FILES)
    workspace = GitWorkspace(str(remote), "main", root / "ws")
    await asyncio.to_thread(workspace.ensure_clone)
    commit = workspace.base_commit()
    embedder = CountingEmbedder(settings)
    cartographer = Cartographer(pool, workspace, embedder)
    await pool.execute("DELETE FROM monkey_file_chunks")
    named = await cartographer.context(
        _card("Boiler alarm threshold", "Change docs/operators.md to describe the alarm."), commit
    )
    assert named.relevant[0].path == "docs/operators.md"
    assert named.relevant[0].reason == "named on the card"
    embedded = embedder.texts
    assert embedded > len(FILES)  # every text file's chunks and the card
    # Named nowhere: the boiler file is the one whose text is about steam pressure.
    similar = await cartographer.context(
        _card("Steam pressure too high", "Raise the relief valve alarm for the boiler."), commit
    )
    assert similar.relevant[0].path == "plant/boiler.py"
    assert similar.relevant[0].reason == "similar to the card"
    belt = await cartographer.context(
        _card("Conveyor belt speed", "Convert motor rpm into belt speed correctly."), commit
    )
    assert belt.relevant[0].path == "plant/conveyor.py"
    assert belt.relevant[0].score > belt.relevant[-1].score
    assert "plant/conveyor.py" in belt.map_text and "classes Belt(stop)" in belt.map_text
    # Chunks are cached per blob: the later cards embedded only themselves.
    assert embedder.texts == embedded + 2
