"""LangChain document compressors over rerank-plugins strategies.

Each class converts documents to plain strings, calls a :class:`rerank_plugins.types.Reranker`
once (through :func:`rerank_plugins.fusion.rank_documents`), and returns copies of the chosen
documents, best first, with ``metadata["relevance_score"]`` (the ranking score: the reranker's,
or the fused one with ``fusion``), ``metadata["rerank_score"]`` (the reranker's own) and
``metadata["rerank_relevance"]`` (normalised, in [0, 1]). LangChain documents carry no
retrieval score of their own: the compressors read it from ``metadata[retrieval_score_key]``
(``"score"``, where this package's ``FaissRetriever`` and many vector-store retrievers put
their similarity); where it is missing, interpolation uses the input order instead. Scoring,
batching and model loading live in ``rerank_plugins``;
the model behind a strategy comes from the shared scoring core, so two compressors naming the
same model share one loaded model. A strategy's options are typed fields of its compressor (its
options model is a base class); ``StrategyRerank.for_strategy`` gives the class of any registered
strategy, plugins included.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field

from rerank_plugins.adapters import AdapterFields, NamedRerankerFields, StrategyFace, score_metadata
from rerank_plugins.fusion import RankedDocument
from rerank_plugins.rerankers.attention import AttentionOptions
from rerank_plugins.rerankers.cross_encoder import CrossEncoderOptions
from rerank_plugins.rerankers.listwise import ListwiseOptions
from rerank_plugins.rerankers.pairwise import PairwiseOptions
from rerank_plugins.rerankers.pointwise import PointwiseOptions
from rerank_plugins.types import detached_metadata

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


class _RerankBase(AdapterFields, BaseDocumentCompressor):
    """Shared fields and the convert -> rerank -> map-back path; not used directly."""

    # frozen=False: a strategy's options model (a base of each strategy class) is frozen
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", frozen=False)

    retrieval_score_key: str | None = Field(
        default="score",
        description="Metadata key holding the retriever's score (fusion='interpolate'); a document without it, "
        "or None, makes the input order stand in for the retrieval scores.",
    )

    @staticmethod
    def _map_back(documents: Sequence[Document], ranked: list[RankedDocument]) -> list[Document]:
        out = []
        for r in ranked:
            # Editing a returned document's (nested) metadata never reaches the input.
            src = documents[r.index]
            doc = src.model_copy(update={"metadata": detached_metadata(src.metadata)})
            doc.metadata[RELEVANCE_SCORE_KEY] = r.score
            doc.metadata.update(score_metadata(r))
            out.append(doc)
        return out

    def _retrieval_scores(self, documents: Sequence[Document]) -> list[float | None] | None:
        key = self.retrieval_score_key
        return None if key is None else [d.metadata.get(key) for d in documents]

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query``; copies, best first, cut to ``top_n``."""
        docs = list(documents)
        ranked = self._rank(query, [d.page_content for d in docs], self._retrieval_scores(docs))
        return self._map_back(docs, ranked)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents` (concurrent calls are micro-batched by the core)."""
        docs = list(documents)
        ranked = await self._arank(query, [d.page_content for d in docs], self._retrieval_scores(docs))
        return self._map_back(docs, ranked)


class RerankPluginsRerank(NamedRerankerFields, _RerankBase):
    """Rerank documents with any rerank-plugins strategy: a registry name or a ready ``Reranker``.

    Example:
        >>> from langchain_core.documents import Document
        >>> compressor = RerankPluginsRerank(reranker="identity", top_n=1)
        >>> [d.page_content for d in compressor.compress_documents([Document("a"), Document("b")], "q")]
        ['a']
    """



class StrategyRerank(StrategyFace, _RerankBase):
    """Base of the one-per-strategy compressors; a subclass names its strategy and options.

    A strategy is one line (its options model first, so its fields are typed fields here)::

        class MyRerank(MyOptions, StrategyRerank, strategy="my-strategy"): ...

    ``StrategyRerank.for_strategy("name")`` makes that class for any registered strategy.
    """

    face: ClassVar[str] = "LangChain document compressor"
    classes: ClassVar[dict[str, type]] = COMPRESSORS  # type: ignore[assignment]


class IdentityRerank(StrategyRerank, strategy="identity"): ...


class PointwiseRerank(PointwiseOptions, StrategyRerank, strategy="pointwise"): ...


class ListwiseRerank(ListwiseOptions, StrategyRerank, strategy="listwise"): ...


class PairwiseRerank(PairwiseOptions, StrategyRerank, strategy="pairwise"): ...


class AttentionRerank(AttentionOptions, StrategyRerank, strategy="attention"): ...


class CrossEncoderRerank(CrossEncoderOptions, StrategyRerank, strategy="cross-encoder"): ...
