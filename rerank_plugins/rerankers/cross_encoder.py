"""Cross-encoder reranking with sentence-transformers' ``CrossEncoder``.

``CrossEncoder.predict(pairs)`` is the primitive; this module only batches, validates and
maps scores back. The model is loaded once per process through the shared core's cache. Lone
surrogates in the query or a document are replaced by U+FFFD first
(:func:`rerank_plugins.text.clean_text`): the tokenizer would raise ``TypeError`` on them.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np

from rerank_plugins.rerankers._common import check_bool, check_positive_int
from rerank_plugins.scoring.model import load_cross_encoder
from rerank_plugins.text import clean_text
from rerank_plugins.types import BaseReranker

__all__ = ["CrossEncoderReranker"]


class CrossEncoderReranker(BaseReranker):
    """Scores (query, document) pairs with a sentence-transformers cross-encoder.

    Args:
        model: hub id or local folder of a cross-encoder (or any BERT-like folder; an
            untrained classification head is created with a warning by sentence-transformers).
        batch_size: pairs per forward pass.
        max_length: token limit per pair (longer pairs are truncated by the tokenizer).
        device: "auto"/None, "cpu", "cuda:0"...
        dtype: "auto"/None (as for the LLM strategies: bf16 on CUDA, and on a CPU with AMX or
            AVX512-BF16; float32 otherwise) or an explicit dtype. The output layer computes in
            float32 whatever this is.

    Example:
        >>> r = CrossEncoderReranker("cross-encoder/ms-marco-MiniLM-L6-v2")  # doctest: +SKIP
        >>> r.rerank("capital of France", ["Berlin.", "Paris is the capital."], top_k=1)  # doctest: +SKIP
        [Hit(index=1, score=8.1)]
    """

    name = "cross-encoder"
    per_document = True

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        batch_size: int = 32,
        max_length: int | None = 512,
        device: str | None = None,
        dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        check_positive_int("batch_size", batch_size)
        check_positive_int("max_length", max_length, minimum=8, allow_none=True)
        check_bool("trust_remote_code", trust_remote_code)
        self.model_name = str(model)
        self.batch_size = batch_size
        self.encoder = load_cross_encoder(
            model, device=device, dtype=dtype, max_length=max_length, trust_remote_code=trust_remote_code
        )

    def score(self, query: str, documents: list[str]) -> list[float]:
        query = clean_text(query)
        scores = self.encoder.predict(
            [(query, clean_text(d)) for d in documents],
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        arr = np.asarray(scores, dtype=np.float64)
        if arr.ndim == 2:
            # Multi-label heads: the last label is the "relevant" one by the common convention.
            arr = arr[:, -1]
        return arr.reshape(-1).tolist()

    def _repr_args(self) -> str:
        return repr(self.model_name)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model_name,
            "batch_size": self.batch_size,
            "dtype": str(self.encoder.dtype).removeprefix("torch."),
        }
