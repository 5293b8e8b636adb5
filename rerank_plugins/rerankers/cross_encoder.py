"""Cross-encoder reranking: sentence-transformers' ``CrossEncoder`` behind the scoring protocol.

The backend's ``pair_scores`` is the primitive
(:class:`~rerank_plugins.scoring.cross_encoder.CrossEncoderCore`); this module only holds the
options and maps scores back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr

from rerank_plugins.options import Options, PositiveInt
from rerank_plugins.rerankers.base import ModelArg, ModelReranker, check_model_name
from rerank_plugins.rerankers.pointwise import _sigmoid
from rerank_plugins.scoring.cross_encoder import get_cross_encoder_core
from rerank_plugins.scoring.protocol import is_backend
from rerank_plugins.types import Call

__all__ = ["CrossEncoderOptions", "CrossEncoderReranker"]


class CrossEncoderOptions(Options):
    """Options of :class:`CrossEncoderReranker`."""

    batch_size: PositiveInt = Field(default=32, description="Pairs per forward pass.")
    max_length: StrictInt | None = Field(
        default=512, ge=8, description="Token limit per pair (longer pairs are truncated by the tokenizer)."
    )
    device: StrictStr | None = Field(default=None, description='"cuda", "cpu"...; None picks CUDA when present.')
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = Field(
        default=None,
        description="Weights' dtype; None/auto as for the LLM strategies (bf16 on CUDA and on a CPU with AMX or "
        "AVX512-BF16, float32 otherwise). The output layer computes in float32 whatever this is.",
    )
    trust_remote_code: StrictBool = Field(default=False, description="Run the model repository's own code.")

    def settings(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "max_length": self.max_length}


class CrossEncoderReranker(ModelReranker):
    """Scores (query, document) pairs with a sentence-transformers cross-encoder.

    Args:
        model: hub id or local folder of a cross-encoder (or any BERT-like folder; an
            untrained classification head is created with a warning by sentence-transformers),
            or a backend with the ``"pair_scores"`` primitive.
        **options: see :class:`CrossEncoderOptions` (``batch_size``, ``max_length``,
            ``device``, ``trust_remote_code``).

    Example:
        >>> r = CrossEncoderReranker("cross-encoder/ms-marco-MiniLM-L6-v2")  # doctest: +SKIP
        >>> r.rerank("capital of France", ["Berlin.", "Paris is the capital."], top_k=1)  # doctest: +SKIP
        [Hit(index=1, score=8.1)]
    """

    name = "cross-encoder"
    per_document = True
    options_class = CrossEncoderOptions
    options: CrossEncoderOptions
    needs = ("pair_scores",)

    def _backend(self, model: ModelArg) -> Any:
        if is_backend(model):
            return model
        check_model_name(model)
        o = self.options
        return get_cross_encoder_core(
            model, device=o.device, dtype=o.dtype, max_length=o.max_length, trust_remote_code=o.trust_remote_code
        )

    def relevance(self, scores: Sequence[float]) -> list[float]:
        """The model's probability of relevance: its output when the encoder ends in a sigmoid or
        softmax (``probabilities`` on the backend, sentence-transformers' default for one label),
        else the sigmoid of the logit. Per (query, document): comparable across calls.

        Example:
            >>> from types import SimpleNamespace
            >>> CrossEncoderReranker.relevance(SimpleNamespace(core=SimpleNamespace(probabilities=False)), [0.0])
            [0.5]
        """
        if getattr(self.core, "probabilities", False):
            return [min(max(float(s), 0.0), 1.0) if math.isfinite(float(s)) else 0.0 for s in scores]
        return [_sigmoid(float(s)) for s in scores]

    def _score_one(self, query: str, documents: list[str], call: Call) -> list[float]:
        call.count("pairs", len(documents))
        return self.core.pair_scores(query, documents, self.options.batch_size)
