"""A cross-encoder as a scoring backend: the protocol's ``pair_scores`` primitive, nothing else.

sentence-transformers' ``CrossEncoder.predict(pairs)`` does the work; the encoder is loaded once
per process and settings (:func:`~rerank_plugins.scoring.model.load_cross_encoder`). Lone
surrogates in the query or a document become U+FFFD first
(:func:`rerank_plugins.text.clean_text`): the tokenizer would raise ``TypeError`` on them.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from rerank_plugins.scoring.core import CoreStats
from rerank_plugins.scoring.model import load_cross_encoder, weights_dtype
from rerank_plugins.text import clean_text

__all__ = ["CrossEncoderCore", "get_cross_encoder_core"]


class CrossEncoderCore:
    """Pair scores from one loaded ``CrossEncoder``; build with :func:`get_cross_encoder_core`.

    Example:
        >>> core = get_cross_encoder_core("cross-encoder/ms-marco-MiniLM-L6-v2")  # doctest: +SKIP
        >>> core.pair_scores("capital of France", ["Berlin.", "Paris is the capital."])  # doctest: +SKIP
        [-11.2, 8.1]
    """

    capabilities = frozenset({"pair_scores"})

    def __init__(self, encoder: Any, name: str) -> None:
        self.encoder = encoder
        self.name = name
        self.stats = CoreStats()
        # sentence-transformers applies the model's activation (Sigmoid by default for one label)
        # (sentence-transformers before 4 names it default_activation_function)
        fn = getattr(encoder, "activation_fn", None) or getattr(encoder, "default_activation_function", None)
        activation = type(fn).__name__
        #: whether pair_scores are already probabilities (the encoder ends in a sigmoid or softmax)
        self.probabilities = activation in ("Sigmoid", "Softmax")

    def pair_scores(self, query: str, documents: Sequence[str], batch_size: int = 32) -> list[float]:
        """One relevance score per (query, document): the encoder's output (a logit, or a probability
        when the model's activation is a sigmoid: see ``probabilities``)."""
        if not documents:
            return []
        query = clean_text(query)
        scores = self.encoder.predict(
            [(query, clean_text(d)) for d in documents],
            batch_size=batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        arr = np.asarray(scores, dtype=np.float64)
        if arr.ndim == 2:
            # Multi-label heads: the last label is the "relevant" one by the common convention.
            arr = arr[:, -1]
        self.stats.add(forward_passes=math.ceil(len(documents) / batch_size))
        return [float(x) for x in arr.reshape(-1)]

    def describe(self) -> dict[str, Any]:
        """The backend's settings, for reports."""
        return {
            "backend": "sentence-transformers",
            "model": self.name,
            "device": str(self.encoder.device),
            "dtype": str(weights_dtype(self.encoder)).removeprefix("torch."),
        }

    def __repr__(self) -> str:
        return f"CrossEncoderCore({self.name!r})"


_cores: dict[int, CrossEncoderCore] = {}
_lock = threading.Lock()


def get_cross_encoder_core(
    model: str | os.PathLike[str],
    *,
    device: str | None = None,
    dtype: str | None = None,
    max_length: int | None = 512,
    trust_remote_code: bool = False,
) -> CrossEncoderCore:
    """The process-wide :class:`CrossEncoderCore` for a cross-encoder (loaded once, then shared)."""
    encoder = load_cross_encoder(
        model, device=device, dtype=dtype, max_length=max_length, trust_remote_code=trust_remote_code  # type: ignore[arg-type]
    )
    with _lock:
        core = _cores.get(id(encoder))
        if core is None or core.encoder is not encoder:
            core = _cores[id(encoder)] = CrossEncoderCore(encoder, str(model))
        return core
