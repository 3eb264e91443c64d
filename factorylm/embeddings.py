"""Sentence embeddings with fastembed (all-MiniLM-L6-v2, 384 dimensions, cosine-normalised).

The model comes from a local directory when settings name one (these machines cannot reach the
model hub), else fastembed downloads it by name. Inference is CPU-bound and synchronous: async
callers run it in a thread (`embed_async`) so the event loop keeps serving workflows.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from factorylm.settings import Settings

DIMENSIONS = 384
HUB_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# fastembed keeps one registry per process; a local directory is registered under this name.
_LOCAL_MODEL = "factorylm/all-MiniLM-L6-v2-local"
# Measured on 2 cores with length-sorted batches: 16 short texts per batch is the sweet spot;
# larger batches lose to padding, and onnxruntime already uses both cores for one text.
DEFAULT_BATCH = 16

Vector = NDArray[np.float32]


log = logging.getLogger(__name__)


class EmbeddingModelError(RuntimeError):
    """The embedding model could not be loaded; the message names the directory or model."""


_register_lock = threading.Lock()
_registered = False


def _register_local_model() -> None:
    global _registered
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    with _register_lock:
        if _registered:
            return
        TextEmbedding.add_custom_model(
            model=_LOCAL_MODEL,
            pooling=PoolingType.MEAN,
            normalization=True,
            sources=ModelSource(hf=HUB_MODEL),
            dim=DIMENSIONS,
            model_file="model.onnx",
        )
        _registered = True


def local_model_dir(model_dir: Path | None) -> Path | None:
    """The configured model directory, or None for fastembed's own download when it does not
    exist: a plain clone elsewhere has no model directory beside it. Said once, in the log."""
    if model_dir is not None and not model_dir.exists():
        log.warning(
            "embedding model directory %s does not exist; downloading %s with fastembed "
            "instead (needs the network; set FACTORYLM_EMBEDDING_MODEL_DIR to a local copy)",
            model_dir,
            HUB_MODEL,
        )
        return None
    return model_dir


class Embedder:
    """Loads the model on first use; thread-safe (onnxruntime sessions run concurrently)."""

    def __init__(self, model_dir: Path | None, *, batch_size: int = DEFAULT_BATCH) -> None:
        self.model_dir = model_dir
        self.batch_size = batch_size
        self._model: object | None = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return HUB_MODEL

    def _load(self) -> object:
        from fastembed import TextEmbedding

        with self._lock:
            if self._model is not None:
                return self._model
            self.model_dir = local_model_dir(self.model_dir)
            try:
                if self.model_dir is not None:
                    if not (self.model_dir / "model.onnx").is_file():
                        raise EmbeddingModelError(
                            f"no model.onnx in {self.model_dir} "
                            "(set FACTORYLM_EMBEDDING_MODEL_DIR, or empty to download)"
                        )
                    _register_local_model()
                    self._model = TextEmbedding(
                        model_name=_LOCAL_MODEL, specific_model_path=str(self.model_dir)
                    )
                else:
                    self._model = TextEmbedding(model_name=HUB_MODEL)
            except EmbeddingModelError:
                raise
            except Exception as exc:
                where = self.model_dir or HUB_MODEL
                raise EmbeddingModelError(f"cannot load embedding model {where}: {exc}") from exc
            return self._model

    def embed(self, texts: Sequence[str], *, batch_size: int | None = None) -> NDArray[np.float32]:
        """One unit-length row per text, in order."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        model = self._load()
        # fastembed pads each batch to its longest text: batching texts of similar length
        # wastes less (measured +20 % on alert texts), and the order is restored after.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        rows = list(
            model.embed(  # type: ignore[attr-defined]
                [texts[i] for i in order], batch_size=batch_size or self.batch_size
            )
        )
        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        out[order] = np.asarray(rows, dtype=np.float32)
        return out

    def embed_one(self, text: str) -> Vector:
        return np.asarray(self.embed([text])[0], dtype=np.float32)

    async def embed_async(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return await asyncio.to_thread(self.embed, texts)


_shared: dict[Path | None, Embedder] = {}
_shared_lock = threading.Lock()


def get_embedder(settings: Settings) -> Embedder:
    """One embedder per model directory per process: the ONNX session is loaded once."""
    with _shared_lock:
        embedder = _shared.get(settings.embedding_model_dir)
        if embedder is None:
            embedder = Embedder(
                settings.embedding_model_dir, batch_size=settings.embedding_batch_size
            )
            _shared[settings.embedding_model_dir] = embedder
        return embedder


def to_pgvector(vector: Sequence[float] | Vector) -> str:
    """pgvector's text form, so queries need no per-connection codec: '[0.1,0.2,...]'."""
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


def cosine(a: Vector, b: Vector) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
