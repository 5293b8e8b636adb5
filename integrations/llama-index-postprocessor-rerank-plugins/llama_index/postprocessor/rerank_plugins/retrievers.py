"""A LlamaIndex retriever over a rerank-plugins FAISS index.

The index (build, search, save, load) lives in :mod:`rerank_plugins.retrieval`; this class only
turns search results into ``NodeWithScore`` objects (``TextNode`` with the document id as
``id_``, its text and metadata; ``score`` = the similarity, higher is better).

Example:
    >>> from rerank_plugins.retrieval import HashingEmbedder, index_documents
    >>> from llama_index.postprocessor.rerank_plugins import FaissRetriever
    >>> retriever = FaissRetriever(index_documents(["red fox", "blue whale"], embedder=HashingEmbedder(32)))
    >>> [n.node.get_content() for n in retriever.retrieve("whale")][:1]
    ['blue whale']
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle, TextNode

from rerank_plugins.retrieval import Embedder, FaissIndex, SearchResult

__all__ = ["FaissRetriever"]


class FaissRetriever(BaseRetriever):
    """Retrieve nodes from a :class:`rerank_plugins.retrieval.FaissIndex`.

    Args:
        index: a built or loaded FAISS index.
        similarity_top_k: number of nodes returned per query (a positive int; may be changed later).
        callback_manager, verbose: as for any LlamaIndex retriever.

    ``retrieve`` / ``aretrieve`` take a string or a ``QueryBundle``. As in LlamaIndex's vector
    retrievers, a bundle's ``custom_embedding_strs`` (set by query transforms such as HyDE) are
    embedded instead of ``query_str``, several of them averaged. A precomputed
    ``query_bundle.embedding`` is not used: it may come from another embedding model.

    Example:
        >>> from llama_index.core.query_engine import RetrieverQueryEngine  # doctest: +SKIP
        >>> from llama_index.postprocessor.rerank_plugins import FaissRetriever, PointwiseRerank  # doctest: +SKIP
        >>> retriever = FaissRetriever.load("my-index", similarity_top_k=20)  # doctest: +SKIP
        >>> engine = RetrieverQueryEngine.from_args(  # doctest: +SKIP
        ...     retriever, node_postprocessors=[PointwiseRerank(model="<llm>", top_n=5)])
    """

    def __init__(
        self,
        index: FaissIndex,
        similarity_top_k: int = 10,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if not isinstance(index, FaissIndex):
            raise ValueError(f"index must be a rerank_plugins.retrieval.FaissIndex, got {type(index).__name__}")
        self.index = index
        self.similarity_top_k = similarity_top_k
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @property
    def similarity_top_k(self) -> int:
        """Number of nodes returned per query."""
        return self._similarity_top_k

    @similarity_top_k.setter
    def similarity_top_k(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"similarity_top_k must be a positive int, got {value!r}")
        self._similarity_top_k = value

    @classmethod
    def from_nodes(
        cls,
        nodes: Sequence[BaseNode],
        *,
        embedder: str | Embedder,
        similarity_top_k: int = 10,
        **index_options: Any,
    ) -> FaissRetriever:
        """Index LlamaIndex nodes or documents (text without metadata; id = ``node_id``).

        Args:
            nodes: nodes or ``Document`` objects; their metadata must be JSON-serialisable.
            embedder: sentence-transformers hub id or folder, or an embedder object.
            similarity_top_k: nodes returned per query.
            **index_options: :class:`~rerank_plugins.retrieval.FaissIndex` options (``kind``, ...).
        """
        index = FaissIndex.build(
            [n.get_content(metadata_mode=MetadataMode.NONE) for n in nodes],
            ids=[n.node_id for n in nodes],
            metadatas=[dict(n.metadata) for n in nodes],
            embedder=embedder,
            **index_options,
        )
        return cls(index, similarity_top_k=similarity_top_k)

    @classmethod
    def load(cls, folder: str | os.PathLike[str], *, similarity_top_k: int = 10, **load_options: Any) -> FaissRetriever:
        """Load an index saved with ``FaissIndex.save`` / ``rerank-plugins index``."""
        return cls(FaissIndex.load(folder, **load_options), similarity_top_k=similarity_top_k)

    @staticmethod
    def _to_node(result: SearchResult) -> NodeWithScore:
        return NodeWithScore(
            node=TextNode(id_=result.id, text=result.text, metadata=result.metadata), score=result.score
        )

    def _search(self, query_bundle: QueryBundle) -> list[SearchResult]:
        texts = query_bundle.custom_embedding_strs
        if texts is None:
            return self.index.search(query_bundle.query_str, k=self.similarity_top_k)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"query_bundle.custom_embedding_strs must be a non-empty list of str, got {texts!r}")
        vectors = self.index.embedder.embed_queries(texts, batch_size=self.index.batch_size)
        return self.index.search_vectors(vectors.mean(axis=0, keepdims=True), k=self.similarity_top_k)[0]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [self._to_node(r) for r in self._search(query_bundle)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # embedding + FAISS search are CPU/GPU work: keep them off the event loop
        return await asyncio.to_thread(self._retrieve, query_bundle)
