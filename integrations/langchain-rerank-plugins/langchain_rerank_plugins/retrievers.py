"""A LangChain retriever over a rerank-plugins FAISS index.

The index (build, search, save, load) lives in :mod:`rerank_plugins.retrieval`; this class only
turns search results into ``Document`` objects (``id`` = the document id, ``page_content`` = its
text, the stored metadata plus ``metadata["score"]``, the similarity, higher is better).

Example:
    >>> from rerank_plugins.retrieval import HashingEmbedder, index_documents
    >>> from langchain_rerank_plugins import FaissRetriever
    >>> retriever = FaissRetriever(index=index_documents(["red fox", "blue whale"], embedder=HashingEmbedder(32)))
    >>> retriever.invoke("whale")[0].page_content
    'blue whale'
    >>> len(retriever.invoke("whale", k=1))  # the number of documents for this call only
    1
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from langchain_rerank_plugins._call_time import result_count
from rerank_plugins.retrieval import Embedder, FaissIndex

__all__ = ["FaissRetriever"]

SCORE_KEY = "score"


class FaissRetriever(BaseRetriever):
    """Retrieve documents from a :class:`rerank_plugins.retrieval.FaissIndex`.

    ``k`` is the number of documents per query; ``invoke(query, k=2)`` (or ``ainvoke``) overrides
    it for one call, and ``configurable_fields(k=ConfigurableField(id="k"))`` lets a chain's
    config set it. Any other call-time keyword is a ``ValueError``.

    Example:
        >>> from langchain_classic.retrievers import ContextualCompressionRetriever  # doctest: +SKIP
        >>> from langchain_rerank_plugins import FaissRetriever, PointwiseRerank  # doctest: +SKIP
        >>> retriever = ContextualCompressionRetriever(  # doctest: +SKIP
        ...     base_retriever=FaissRetriever.load("my-index", k=20),
        ...     base_compressor=PointwiseRerank(model="<llm>", top_n=5))
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    index: FaissIndex = Field(description="A built or loaded rerank_plugins.retrieval.FaissIndex.")
    k: int = Field(default=4, ge=1, strict=True, description="Number of documents returned per query.")

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[Document],
        *,
        embedder: str | Embedder,
        k: int = 4,
        **index_options: Any,
    ) -> FaissRetriever:
        """Index LangChain documents (id = ``document.id``, else its position).

        Args:
            documents: the documents; their metadata must be JSON-serialisable.
            embedder: sentence-transformers hub id or folder, or an embedder object.
            k: documents returned per query.
            **index_options: :class:`~rerank_plugins.retrieval.FaissIndex` options (``kind``, ...).
        """
        index = FaissIndex.build(
            [d.page_content for d in documents],
            ids=[d.id or str(i) for i, d in enumerate(documents)],
            metadatas=[dict(d.metadata) for d in documents],
            embedder=embedder,
            **index_options,
        )
        return cls(index=index, k=k)

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, k: int = 4, **load_options: Any) -> FaissRetriever:
        """Load an index saved with ``FaissIndex.save`` / ``rerank-plugins index``."""
        return cls(index=FaissIndex.load(folder, **load_options), k=k)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None, **kwargs: Any
    ) -> list[Document]:
        count = result_count("k", k, self.k, kwargs, type(self).__name__)
        return [
            Document(id=r.id, page_content=r.text, metadata={**r.metadata, SCORE_KEY: r.score})
            for r in self.index.search(query, k=count)
        ]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, k: int | None = None, **kwargs: Any
    ) -> list[Document]:
        # embedding + FAISS search are CPU/GPU work: keep them off the event loop
        return await asyncio.to_thread(
            self._get_relevant_documents, query, run_manager=run_manager.get_sync(), k=k, **kwargs
        )
