"""Manuals: ingest Markdown, text and a real PDF; search with citations; bad files store
nothing; the `factorylm manuals` command."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from pdf_maker import tiny_pdf

from activities.agents.manual_hunter import ManualHunter
from factorylm.embeddings import get_embedder
from factorylm.manuals import ManualError, ManualStore
from factorylm.models.agents import ManualHunterInput
from factorylm.settings import PROJECT_ROOT, Settings

SHIPPED = sorted((PROJECT_ROOT / "manuals").glob("*.md"))


@pytest.fixture
def store(pool: asyncpg.Pool, settings: Settings) -> ManualStore:
    return ManualStore(pool, get_embedder(settings))


async def test_the_shipped_manuals_answer_a_drift_with_citations(
    store: ManualStore, pool: asyncpg.Pool
) -> None:
    assert len(SHIPPED) >= 4
    for path in SHIPPED:
        summary = await store.add(path)
        assert summary.chunks >= 3 and summary.media_type == "markdown"
    again = await store.add(SHIPPED[0])
    assert again.replaced
    assert (
        await pool.fetchval("SELECT count(*) FROM manuals WHERE source = $1", SHIPPED[0].name) == 1
    )

    hunter = ManualHunter(store)
    result = await hunter.manual_hunter(
        ManualHunterInput(query="drive-end bearing vibration rising on the conveyor: what to check")
    )
    assert len(result.excerpts) == 3 and result.note == ""
    top = result.excerpts[0]
    assert top.source in {"conveyor-drive.md", "vibration-troubleshooting.md"}
    assert top.citation.startswith(top.source + " §") and top.similarity > 0.4

    pump = await store.search("pump cavitation with low suction pressure", k=1)
    assert pump[0].source in {"micro820-pump.md", "s7-press.md"}


async def test_a_pdf_is_cited_by_page(store: ManualStore, tmp_path: Path) -> None:
    path = tmp_path / f"chiller-{uuid.uuid4().hex[:6]}.pdf"
    path.write_bytes(
        tiny_pdf(
            [
                ["Chiller CH-7 service manual.", "Electrical connections and fuse ratings."],
                [
                    "Compressor oil temperature high:",
                    "check the oil cooler fan, clean the condenser coil,",
                    "and verify the oil heater thermostat.",
                ],
            ],
            title="Chiller CH-7",
        )
    )
    summary = await store.add(path)
    assert (summary.media_type, summary.pages, summary.title) == ("pdf", 2, "Chiller CH-7")
    found = await store.search("compressor oil temperature too high on the chiller", k=5)
    mine = [e for e in found if e.source == path.name]
    assert mine[0].page == 2 and mine[0].citation == f"{path.name} p. 2"


async def test_an_unchanged_manual_is_not_embedded_again(
    store: ManualStore, tmp_path: Path
) -> None:
    path = tmp_path / f"pump-{uuid.uuid4().hex[:6]}.md"
    path.write_text("# Pump\n\n## Seals\n\nReplace the mechanical seal when it weeps.\n")
    first = await store.add_if_changed(path)
    assert first is not None and not first.replaced
    assert await store.add_if_changed(path) is None
    path.write_text(path.read_text() + "\nCheck the flush line too.\n")
    again = await store.add_if_changed(path)
    assert again is not None and again.replaced


async def test_bad_files_store_nothing(
    store: ManualStore, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    before = await pool.fetchval("SELECT count(*) FROM manual_chunks")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage")
    with pytest.raises(ManualError, match=r"broken\.pdf: cannot read the PDF"):
        await store.add(broken)
    blank = tmp_path / "blank.pdf"
    blank.write_bytes(tiny_pdf([[]]))
    with pytest.raises(ManualError, match="no extractable text"):
        await store.add(blank)
    empty = tmp_path / "empty.md"
    empty.write_text("")
    with pytest.raises(ManualError, match="empty"):
        await store.add(empty)
    assert await pool.fetchval("SELECT count(*) FROM manual_chunks") == before
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM manuals WHERE source IN ('broken.pdf', 'blank.pdf', 'empty.md')"
        )
        == 0
    )


def test_the_manuals_command(settings: Settings, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FACTORYLM_PG_PORT": str(settings.pg_port),
        "FACTORYLM_PG_DATABASE": settings.pg_database,
    }
    good = tmp_path / f"notes-{uuid.uuid4().hex[:6]}.txt"
    good.write_text("Gearbox GB-2: change the oil every 4000 running hours with ISO VG 220.")
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"not a pdf at all")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    added = cli("manuals", "add", str(good), str(bad))
    assert added.returncode == 1
    assert f"added {good.name}" in added.stdout and "1 chunk(s)" in added.stdout
    assert "error: bad.pdf: cannot read the PDF" in added.stderr
    assert "nothing was stored" in added.stderr
    found = cli("manuals", "search", "gearbox oil change interval", "-k", "1")
    assert found.returncode == 0 and f"[{good.name}]" in found.stdout
    listed = cli("manuals", "list")
    assert good.name in listed.stdout
