"""LangChain document compressors over rerank-plugins strategies.

Each class converts documents to plain strings, calls a :class:`rerank_plugins.types.Reranker`
once, and returns copies of the chosen documents, best first, with
``metadata["relevance_score"]``. Scoring, batching and model loading live in ``rerank_plugins``;
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
from pydantic import ConfigDict

from rerank_plugins.adapters import AdapterFields, NamedRerankerFields, StrategyFace
from rerank_plugins.rerankers.attention import AttentionOptions
from rerank_plugins.rerankers.cross_encoder import CrossEncoderOptions
from rerank_plugins.rerankers.listwise import ListwiseOptions
from rerank_plugins.rerankers.pairwise import PairwiseOptions
from rerank_plugins.rerankers.pointwise import PointwiseOptions
from rerank_plugins.types import Hit, detached_metadata

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
