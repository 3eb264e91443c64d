"""The fastembed model loaded from the shared directory matches sentence-transformers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from factorylm.embeddings import (
    DIMENSIONS,
    HUB_MODEL,
    Embedder,
    EmbeddingModelError,
    cosine,
    local_model_dir,
    to_pgvector,
)
from factorylm.settings import load_settings

MODEL_DIR = load_settings().embedding_model_dir


def test_embeddings_match_the_reference() -> None:
    assert MODEL_DIR is not None
    reference = json.loads((MODEL_DIR / "reference-embeddings.json").read_text())
    vectors = Embedder(MODEL_DIR, batch_size=2).embed(reference["sentences"])
    assert vectors.shape == (len(reference["sentences"]), DIMENSIONS)
    for got, want in zip(vectors, reference["embeddings"], strict=True):
        assert cosine(got, np.asarray(want, dtype=np.float32)) >= 0.999
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_the_vectors() -> None:
    texts = [f"vibration on press-{i} drifted +{i}.5σ" for i in range(10)]
    embedder = Embedder(MODEL_DIR)
    batched = embedder.embed(texts, batch_size=4)
    single = np.stack([embedder.embed_one(t) for t in texts])
    assert np.allclose(batched, single, atol=1e-5)
    assert embedder.embed([]).shape == (0, DIMENSIONS)


def test_a_directory_without_the_model_is_named(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingModelError, match=str(tmp_path)):
        Embedder(tmp_path).embed(["x"])


def test_an_absent_model_directory_falls_back_to_the_download_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    absent = tmp_path / "no-such-model"
    with caplog.at_level(logging.WARNING, logger="factorylm.embeddings"):
        assert local_model_dir(absent) is None
    assert str(absent) in caplog.text and HUB_MODEL in caplog.text
    # A directory that exists is used as configured (a wrong one is an error, above).
    assert local_model_dir(tmp_path) == tmp_path


def test_pgvector_text_form() -> None:
    assert to_pgvector([0.5, -1.0, 1e-8]) == "[0.5,-1,1e-08]"
