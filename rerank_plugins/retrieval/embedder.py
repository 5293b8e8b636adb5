"""Text embedders for the FAISS index: sentence-transformers, and a hashing fake for tests.

An embedder turns texts into a float32 matrix ``[n, dimension]``. The index normalises
vectors itself, so embedders return raw model output. Each embedder describes itself with
:meth:`Embedder.spec` (a small JSON-able dict) so a saved index can rebuild it on load. The
sentence-transformers embedder replaces lone surrogates with U+FFFD before tokenizing
(:func:`rerank_plugins.text.clean_text`).

Example:
    >>> emb = HashingEmbedder(dimension=8)
    >>> emb.embed_documents(["a cat", "a dog"]).shape
    (2, 8)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from rerank_plugins.text import clean_text

if TYPE_CHECKING:
    import torch

__all__ = [
    "Embedder",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "embedder_from_spec",
    "get_embedder",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    """What the index needs from an embedding model."""

    @property
    def name(self) -> str:
        """Model identifier (hub id or folder), recorded in saved indexes."""
        ...

    @property
    def dimension(self) -> int:
        """Length of each embedding vector."""
        ...

    def embed_documents(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        """Embeddings of corpus texts, float32 ``[len(texts), dimension]``."""
        ...

    def embed_queries(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Embeddings of queries (some models prompt queries differently), float32."""
        ...

    def spec(self) -> dict[str, Any]:
        """JSON-able description from which :func:`embedder_from_spec` rebuilds this embedder."""
        ...


def _progress_default(show_progress: bool | None) -> bool:
    # Progress bars only on a terminal: logs and CI stay clean.
    return sys.stderr.isatty() if show_progress is None else show_progress


class SentenceTransformerEmbedder:
    """A thin wrapper over ``sentence_transformers.SentenceTransformer``.

    Prefer :func:`get_embedder`, which shares one loaded model per ``(name, device, dtype)`` in
    the process. Queries and documents go through ``encode_query`` / ``encode_document``, so models
    with configured prompts (E5, BGE, ...) get them.

    Args:
        name: hub id or local folder of a sentence-transformers model.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` lets sentence-transformers pick
            (CUDA when present, else CPU).
        dtype: ``"auto"``/``None`` resolves as for the LLM
            (:func:`~rerank_plugins.scoring.resolve_dtype`: bf16 on CUDA, and on a CPU with AMX
            or AVX512-BF16; float32 otherwise), or an explicit ``"float32"``, ``"bfloat16"``...
            Embeddings are returned as float32 either way.

    Example:
        >>> emb = SentenceTransformerEmbedder("sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> emb.embed_queries(["what is faiss?"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(self, name: str, device: str | None = None, dtype: str | torch.dtype | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        from rerank_plugins.scoring.model import loading, resolve_device, resolve_dtype

        self._name = name
        path = os.path.expanduser(name)
        dt = resolve_dtype(dtype, resolve_device(device))
        logger.info("loading sentence-transformers model %s (device=%s, %s)", name, device or "auto", dt)

        # A local folder that fails to load names the broken file; a hub id's error stays as it is.
        with loading("embedder", path) if os.path.exists(path) else contextlib.nullcontext():
            self.model = SentenceTransformer(
                path if os.path.isdir(path) else name, device=device, model_kwargs={"dtype": dt}
            )
        get_dim = getattr(self.model, "get_embedding_dimension", None) or (self.model.get_sentence_embedding_dimension)
        dim = get_dim()
        if not dim:
            raise ValueError(f"model {name!r} does not report an embedding dimension")
        self._dimension = int(dim)

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def device(self) -> str:
        return str(self.model.device)

    @property
    def dtype(self) -> str:
        """The weights' dtype, e.g. ``"bfloat16"``."""
        from rerank_plugins.scoring.model import weights_dtype

        return str(weights_dtype(self.model)).removeprefix("torch.")

    def _encode(self, method: str, texts: Sequence[str], batch_size: int, show_progress: bool) -> np.ndarray:
        # Tokenizers raise TypeError on lone surrogates.
        texts = [clean_text(t) for t in texts]
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        encode = getattr(self.model, method, None) or self.model.encode
        out = encode(texts, batch_size=batch_size, show_progress_bar=show_progress, convert_to_numpy=True)
        return np.ascontiguousarray(out, dtype=np.float32)

    def embed_documents(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        return self._encode("encode_document", texts, batch_size, _progress_default(show_progress))

    def embed_queries(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        return self._encode("encode_query", texts, batch_size, False)

    def spec(self) -> dict[str, Any]:
        return {"kind": "sentence-transformers", "name": self._name, "dimension": self._dimension}

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self._name!r}, device={self.device!r}, dtype={self.dtype!r})"


_TOKEN = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Deterministic bag-of-words hashing vectors: no model, no download.

    Each lower-cased word adds +-1 to one of ``dimension`` buckets (blake2b hash, so the same
    in every process). Texts sharing words get similar vectors, which makes it a real (if weak)
    lexical embedder and a first-class fake for tests of code built on the index.

    Example:
        >>> emb = HashingEmbedder(dimension=16)
        >>> bool((emb.embed_queries(["red fox"]) == emb.embed_documents(["Red fox!"])).all())
        True
    """

    def __init__(self, dimension: int = 256) -> None:
        if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
            raise ValueError(f"dimension must be a positive int, got {dimension!r}")
        self._dimension = dimension

    @property
    def name(self) -> str:
        return f"hashing-{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self._dimension, dtype=np.float32)
        for token in _TOKEN.findall(text.lower()):
            h = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")
            v[h % self._dimension] += 1.0 if (h >> 63) & 1 else -1.0
        return v

    def embed_documents(
        self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None
    ) -> np.ndarray:
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = self._vector(t)
        return out

    def embed_queries(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        return self.embed_documents(texts)

    def spec(self) -> dict[str, Any]:
        return {"kind": "hashing", "name": self.name, "dimension": self._dimension}

    def __repr__(self) -> str:
        return f"HashingEmbedder(dimension={self._dimension})"


_cache: dict[tuple[str, str | None, Any], SentenceTransformerEmbedder] = {}
_cache_lock = threading.Lock()


def get_embedder(model: str | Embedder, device: str | None = None, dtype: str | torch.dtype | None = None) -> Embedder:
    """The process-wide embedder for ``model``: loaded once per ``(model, device, dtype)``.

    Args:
        model: hub id or local folder of a sentence-transformers model, or an embedder object
            (returned unchanged).
        device, dtype: as for :class:`SentenceTransformerEmbedder`.

    Example:
        >>> get_embedder(HashingEmbedder(8)).dimension
        8
    """
    if not isinstance(model, str):
        if not isinstance(model, Embedder):
            raise ValueError(f"embedder must be a model name or an Embedder, got {type(model).__name__}")
        return model
    if not model:
        raise ValueError("embedder model name must be a non-empty string")
    key = _cache_key(model, device, dtype)
    with _cache_lock:
        emb = _cache.get(key)
        if emb is None:
            emb = SentenceTransformerEmbedder(model, device=device, dtype=key[2])
            _cache[key] = emb
    return emb


def _cache_key(model: str, device: str | None, dtype: str | torch.dtype | None = None) -> tuple[str, str | None, Any]:
    """The key :func:`get_embedder` shares a model under (tests put fakes there).

    Keyed by the resolved dtype: ``"auto"`` and the dtype it stands for share one model.
    """
    from rerank_plugins.scoring.model import resolve_device, resolve_dtype

    return (model, device, resolve_dtype(dtype, resolve_device(device)))


def embedder_from_spec(spec: Mapping[str, Any], device: str | None = None) -> Embedder:
    """Rebuild an embedder from :meth:`Embedder.spec` output (as stored in a saved index).

    Example:
        >>> embedder_from_spec({"kind": "hashing", "dimension": 8})
        HashingEmbedder(dimension=8)
    """
    kind = spec.get("kind")
    if kind == "hashing":
        return HashingEmbedder(int(spec["dimension"]))
    if kind == "sentence-transformers":
        return get_embedder(str(spec["name"]), device=device)
    raise ValueError(f"cannot rebuild embedder of kind {kind!r}; pass embedder=... explicitly when loading")
