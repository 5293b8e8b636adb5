"""LangChain document compressors over rerank-plugins strategies.

Each class converts documents to plain strings, calls a :class:`rerank_plugins.types.Reranker`
once, and returns copies of the chosen documents, best first, with
``metadata["relevance_score"]``. Scoring, batching and model loading live in ``rerank_plugins``;
the model behind a strategy comes from the shared scoring core, so two compressors naming the
same model share one loaded model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, PrivateAttr

from rerank_plugins import registry
from rerank_plugins.types import Hit, Reranker, detached_metadata

__all__ = [
    "COMPRESSORS",
    "AttentionRerank",
    "CrossEncoderRerank",
    "IdentityRerank",
    "ListwiseRerank",
    "PairwiseRerank",
    "PointwiseRerank",
    "RerankPluginsRerank",
    "StrategyRerank",
]

logger = logging.getLogger(__name__)

RELEVANCE_SCORE_KEY = "relevance_score"

#: registry name -> compressor class; filled by ``StrategyRerank`` subclasses
COMPRESSORS: dict[str, type[StrategyRerank]] = {}


class _RerankBase(BaseDocumentCompressor):
    """Shared fields and the convert -> rerank -> map-back path; not used directly."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: str | None = Field(
        default=None,
        description="Model for the strategy: hub id, local folder or .gguf file (loaded once per "
        "process by the shared scoring core). None for strategies that need no model.",
    )
    # strict: True, "2" and 2.0 are mistakes, not counts
    top_n: int | None = Field(
        default=None, ge=1, strict=True, description="Number of documents to return, best first; None keeps all."
    )
    reranker_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword options for the strategy factory (see rerank_plugins.registry).",
    )

    _reranker: Reranker = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        # built once, here: the model itself comes from the shared core's process-wide cache
        self._reranker = self._build_reranker()

    def _build_reranker(self) -> Reranker:  # pragma: no cover - overridden
        raise NotImplementedError

    def _strategy_options(self) -> dict[str, Any]:
        options = dict(self.reranker_kwargs)
        if self.model is not None:
            options["model"] = self.model
        return options

    @property
    def reranker_instance(self) -> Reranker:
        """The reranker built at construction (shared model via the scoring core)."""
        return self._reranker

    @staticmethod
    def _map_back(documents: Sequence[Document], hits: list[Hit]) -> list[Document]:
        out = []
        for h in hits:
            # Editing a returned document's (nested) metadata never reaches the input.
            src = documents[h.index]
            doc = src.model_copy(update={"metadata": detached_metadata(src.metadata)})
            doc.metadata[RELEVANCE_SCORE_KEY] = h.score
            out.append(doc)
        return out

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query``; copies, best first, cut to ``top_n``."""
        docs = list(documents)
        hits = self._reranker.rerank(query, [d.page_content for d in docs], self.top_n)
        return self._map_back(docs, hits)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents` (concurrent calls are micro-batched by the core)."""
        docs = list(documents)
        hits = await self._reranker.arerank(query, [d.page_content for d in docs], self.top_n)
        return self._map_back(docs, hits)


class RerankPluginsRerank(_RerankBase):
    """Rerank documents with any rerank-plugins strategy: a registry name or a ready ``Reranker``.

    Example:
        >>> from langchain_core.documents import Document
        >>> compressor = RerankPluginsRerank(reranker="identity", top_n=1)
        >>> [d.page_content for d in compressor.compress_documents([Document("a"), Document("b")], "q")]
        ['a']
    """

    reranker: str | Reranker = Field(
        description="Registry name of the strategy (see rerank_plugins.registry.available()) "
        "or a ready Reranker instance."
    )

    def _build_reranker(self) -> Reranker:
        if isinstance(self.reranker, str):
            return registry.create(self.reranker, **self._strategy_options())
        if self.model is not None or self.reranker_kwargs:
            raise ValueError("model and reranker_kwargs apply to a registry name, not a Reranker instance")
        return self.reranker


class StrategyRerank(_RerankBase):
    """Base for the one-per-strategy compressors; a subclass only names its strategy.

    Adding a strategy is one line::

        class MyRerank(StrategyRerank, strategy="my-strategy"): "My strategy (paper)."
    """

    strategy: ClassVar[str] = ""

    def __init_subclass__(cls, strategy: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if strategy is not None:
            cls.strategy = strategy
            COMPRESSORS[strategy] = cls

    def _build_reranker(self) -> Reranker:
        if not self.strategy:
            raise TypeError("StrategyRerank is abstract: use a subclass or RerankPluginsRerank")
        return registry.create(self.strategy, **self._strategy_options())


class IdentityRerank(StrategyRerank, strategy="identity"):
    """Keeps the retrieval order (baseline; scores 0, -1, -2, ...)."""


class PointwiseRerank(StrategyRerank, strategy="pointwise"):
    """Pointwise yes/no relevance from next-token logits of the shared model."""


class ListwiseRerank(StrategyRerank, strategy="listwise"):
    """FIRST single-token listwise ranking with a sliding window (Reddy et al., 2024)."""


class PairwiseRerank(StrategyRerank, strategy="pairwise"):
    """Pairwise ranking prompting, PRP (Qin et al., 2024)."""


class AttentionRerank(StrategyRerank, strategy="attention"):
    """In-context reranking from query-to-document attention, ICR (Chen et al., 2025)."""


class CrossEncoderRerank(StrategyRerank, strategy="cross-encoder"):
    """A sentence-transformers cross-encoder."""
