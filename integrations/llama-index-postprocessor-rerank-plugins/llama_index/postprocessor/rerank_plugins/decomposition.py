"""Query decomposition as a LlamaIndex retriever: sub-questions, pooled retrieval, one rerank.

Wraps ANY LlamaIndex retriever (a vector index's ``as_retriever()``, BM25, ours). Parsing,
fusion and reranking live in :mod:`rerank_plugins.decomposition`; this class only converts
nodes to strings and back. Each returned node is a copy carrying the trace in its metadata
(``found_by``: every query that retrieved it, with rank and score; ``fused_score``), kept out
of the LLM and embedding text.

Example:
    >>> from llama_index.core.retrievers import BaseRetriever  # doctest: +SKIP
    >>> from llama_index.postprocessor.rerank_plugins import DecompositionRetriever  # doctest: +SKIP
    >>> retriever = DecompositionRetriever(  # doctest: +SKIP
    ...     index.as_retriever(similarity_top_k=10), llm=Settings.llm,
    ...     reranker="pointwise", reranker_kwargs={"model": "Qwen/Qwen2.5-0.5B-Instruct"}, top_n=5)
    >>> retriever.retrieve("Which company made more profit in 2023, NVIDIA or Apple?")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import LLM
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from rerank_plugins import registry
from rerank_plugins.decomposition import (
    Decomposer,
    Decomposition,
    FusionMethod,
    PooledDocument,
    arerank_pool,
    fuse,
    query_list,
    rerank_pool,
)
from rerank_plugins.types import Reranker, detached_metadata

__all__ = ["DecompositionRetriever", "decomposer_from_llm"]

FOUND_BY_KEY = "found_by"
FUSED_SCORE_KEY = "fused_score"
_TRACE_KEYS = (FOUND_BY_KEY, FUSED_SCORE_KEY)


def decomposer_from_llm(llm: Any, **options: Any) -> Decomposer | None:
    """A :class:`Decomposer` for a LlamaIndex ``LLM`` (``complete`` / ``acomplete``), a ready
    Decomposer, a rerank-plugins core or model name, or a callable ``prompt -> text``; ``None`` passes.

    Example:
        >>> decomposer_from_llm(lambda prompt: "1. a b").decompose("q?").sub_questions
        ('a b',)
    """
    if llm is None or isinstance(llm, Decomposer):
        if options and llm is not None:
            raise ValueError("decomposer_kwargs apply to an LLM, not to a ready Decomposer")
        return llm
    if isinstance(llm, LLM):

        def complete(prompt: str) -> str:
            return llm.complete(prompt).text

        async def acomplete(prompt: str) -> str:
            return (await llm.acomplete(prompt)).text

        # A chat LLM answers directly: no forced "1." prefix (that is for the core's raw generation).
        return Decomposer(complete, acomplete=acomplete, **options)
    if isinstance(llm, (str, os.PathLike)) or callable(llm) or type(llm).__name__ == "ScoringCore":
        return Decomposer(llm, **options)
    raise ValueError(
        "llm must be a LlamaIndex LLM, a Decomposer, a rerank-plugins core or model name, or a callable "
        f"prompt -> text; got {type(llm).__name__}"
    )


class DecompositionRetriever(BaseRetriever):
    """Decompose the question, retrieve for it and every sub-question, fuse, rerank against the question.

    Args:
        retriever: any LlamaIndex retriever.
        llm: what writes the sub-questions: a LlamaIndex ``LLM``, a rerank-plugins core or model
            name (local generation), a :class:`~rerank_plugins.decomposition.Decomposer`, or a
            callable ``prompt -> text``. ``None``: no decomposition (retrieve, then rerank).
        reranker: registry name (``"pointwise"``, ``"listwise"``, ...) or a ready ``Reranker``;
            ``None`` returns the fused order.
        reranker_kwargs: options for a registry name (e.g. ``{"model": "<llm>"}``).
        top_n: nodes returned (``None``: all).
        similarity_top_k: LlamaIndex's name for ``top_n`` (as in ``QueryFusionRetriever``: the
            nodes returned after fusion); give one or the other. Each sub-question's retrieval
            depth is the wrapped retriever's own ``similarity_top_k``.
        pool_size: rerank only the first ``pool_size`` fused nodes (``None``: the whole pool).
        fusion: ``"rrf"`` (reciprocal rank fusion, default), ``"max"`` or ``"none"``.
        rrf_k: the RRF constant.
        max_subquestions: at most this many sub-questions (when ``llm`` is not a Decomposer).
        include_original: retrieve with the original question as well.
        decomposer_kwargs: more :class:`Decomposer` options (``prompt``, ``max_new_tokens``, ...).
        metadata_mode: which node metadata goes into the reranked text.
        callback_manager, verbose: as for any LlamaIndex retriever.

    ``retrieve`` / ``aretrieve`` take a string or a ``QueryBundle``; the wrapped retriever gets
    that bundle itself for the original question (so ``custom_embedding_strs`` from a query
    transform such as HyDE still apply) and a new bundle for each sub-question.

    Example:
        >>> from llama_index.core.schema import NodeWithScore, TextNode
        >>> class Fixed(BaseRetriever):
        ...     def _retrieve(self, qb):
        ...         return [NodeWithScore(node=TextNode(id_=w, text=w), score=1.0) for w in qb.query_str.split()[:1]]
        >>> r = DecompositionRetriever(Fixed(), llm=lambda p: "1. apple pie\\n2. pear tart")
        >>> [n.node.node_id for n in r.retrieve("fruit desserts")]
        ['fruit', 'apple', 'pear']
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        *,
        llm: Any = None,
        reranker: str | Reranker | None = None,
        reranker_kwargs: dict[str, Any] | None = None,
        top_n: int | None = None,
        similarity_top_k: int | None = None,
        pool_size: int | None = None,
        fusion: FusionMethod = "rrf",
        rrf_k: int = 60,
        max_subquestions: int = 3,
        include_original: bool = True,
        decomposer_kwargs: dict[str, Any] | None = None,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if not isinstance(retriever, BaseRetriever):
            raise ValueError(f"retriever must be a LlamaIndex BaseRetriever, got {type(retriever).__name__}")
        if fusion not in ("rrf", "max", "none"):
            raise ValueError(f"fusion must be 'rrf', 'max' or 'none', got {fusion!r}")
        if not isinstance(include_original, bool):
            raise ValueError(f"include_original must be a bool (True or False), got {include_original!r}")
        if isinstance(rrf_k, bool) or not isinstance(rrf_k, (int, float)) or rrf_k < 0:
            raise ValueError(f"rrf_k must be a non-negative number, got {rrf_k!r}")
        options = dict(decomposer_kwargs or {})
        if not isinstance(llm, Decomposer):
            options.setdefault("max_subquestions", max_subquestions)
        self.decomposer = decomposer_from_llm(llm, **options)
        if isinstance(reranker, str):
            self.reranker: Reranker | None = registry.create(reranker, **(reranker_kwargs or {}))
        else:
            if reranker_kwargs:
                raise ValueError("reranker_kwargs apply to a registry name, not a Reranker instance")
            if reranker is not None and not isinstance(reranker, Reranker):
                raise ValueError("reranker must be a registry name, a Reranker or None")
            self.reranker = reranker
        top_n, similarity_top_k = _count("top_n", top_n), _count("similarity_top_k", similarity_top_k)
        if top_n is not None and similarity_top_k is not None and top_n != similarity_top_k:
            raise ValueError(
                f"top_n and similarity_top_k are one setting (the nodes returned); got {top_n} and {similarity_top_k}"
            )
        self.retriever = retriever
        self.top_n = top_n if top_n is not None else similarity_top_k
        self.pool_size = pool_size
        self.fusion: FusionMethod = fusion
        self.rrf_k = rrf_k
        self.include_original = include_original
        self.metadata_mode = metadata_mode
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @property
    def top_n(self) -> int | None:
        """Nodes returned (``None``: all)."""
        return self._top_n

    @top_n.setter
    def top_n(self, value: int | None) -> None:
        self._top_n = _count("top_n", value)

    @property
    def similarity_top_k(self) -> int | None:
        """LlamaIndex's name for :attr:`top_n`."""
        return self._top_n

    @similarity_top_k.setter
    def similarity_top_k(self, value: int | None) -> None:
        self._top_n = _count("similarity_top_k", value)

    @property
    def pool_size(self) -> int | None:
        """Rerank only the first ``pool_size`` fused nodes (``None``: the whole pool)."""
        return self._pool_size

    @pool_size.setter
    def pool_size(self, value: int | None) -> None:
        self._pool_size = _count("pool_size", value)

    # ------------------------------------------------------------------ conversion

    def _items(self, nodes: Sequence[NodeWithScore]) -> list[tuple[str, float | None, str, NodeWithScore]]:
        return [(n.node.node_id, n.score, n.node.get_content(metadata_mode=self.metadata_mode), n) for n in nodes]

    @staticmethod
    def _to_node(doc: PooledDocument) -> NodeWithScore:
        # The base retriever's nodes (often a docstore's own) stay untouched.
        src = doc.payload.node
        node = src.model_copy(update={"metadata": detached_metadata(src.metadata)})
        node.metadata.update({FOUND_BY_KEY: doc.trace(), FUSED_SCORE_KEY: doc.fused_score})
        node.excluded_llm_metadata_keys = _with(node.excluded_llm_metadata_keys)
        node.excluded_embed_metadata_keys = _with(node.excluded_embed_metadata_keys)
        return NodeWithScore(node=node, score=doc.score)

    def _queries(self, dec: Decomposition) -> list[str]:
        return query_list(dec, include_original=self.include_original)

    @staticmethod
    def _bundles(query_bundle: QueryBundle, queries: list[str]) -> list[QueryBundle]:
        return [query_bundle if q == query_bundle.query_str else QueryBundle(q) for q in queries]

    # ------------------------------------------------------------------ retrieval

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        question = query_bundle.query_str
        dec = self.decomposer.decompose(question) if self.decomposer else Decomposition.trivial(question)
        queries = self._queries(dec)
        rankings = [self._items(self.retriever.retrieve(b)) for b in self._bundles(query_bundle, queries)]
        pool = fuse(rankings, queries=queries, method=self.fusion, rrf_k=self.rrf_k)
        if self.reranker is not None and pool:
            docs = rerank_pool(question, pool, self.reranker, top_k=self.top_n, pool_size=self.pool_size)
        else:
            docs = pool[: self.top_n] if self.top_n else pool
        return [self._to_node(d) for d in docs]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """The sub-question retrievals run concurrently (``asyncio.gather`` over ``aretrieve``)."""
        question = query_bundle.query_str
        dec = await self.decomposer.adecompose(question) if self.decomposer else Decomposition.trivial(question)
        queries = self._queries(dec)
        results = await asyncio.gather(*(self.retriever.aretrieve(b) for b in self._bundles(query_bundle, queries)))
        rankings = [self._items(nodes) for nodes in results]
        pool = fuse(rankings, queries=queries, method=self.fusion, rrf_k=self.rrf_k)
        if self.reranker is not None and pool:
            docs = await arerank_pool(question, pool, self.reranker, top_k=self.top_n, pool_size=self.pool_size)
        else:
            docs = pool[: self.top_n] if self.top_n else pool
        return [self._to_node(d) for d in docs]


def _count(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    return value


def _with(keys: list[str]) -> list[str]:
    return [*keys, *(k for k in _TRACE_KEYS if k not in keys)]
