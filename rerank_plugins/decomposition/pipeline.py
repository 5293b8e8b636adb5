"""The pipeline: decompose, retrieve for every query, fuse, rerank against the original question.

:class:`DecompositionRetriever` chains the steps over any retriever with a batched
``search(queries, k)`` (a :class:`~rerank_plugins.retrieval.FaissIndex` works as is). The
LlamaIndex and LangChain faces live in the integration packages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from rerank_plugins.decomposition.decomposer import Decomposer, Decomposition, query_list
from rerank_plugins.decomposition.fusion import (
    FUSION_METHODS,
    FusionMethod,
    PooledDocument,
    arerank_pool,
    cut,
    fuse,
    rerank_pool,
)
from rerank_plugins.types import Reranker, validate_query

__all__ = ["BatchRetriever", "DecompositionResult", "DecompositionRetriever", "as_batch_retriever"]


@runtime_checkable
class BatchRetriever(Protocol):
    """A retriever answering several queries at once: ``search(queries, k)`` -> one ranking per query.

    Items are ``(id, score, text)`` tuples or objects with ``id``, ``score`` and ``text``.
    """

    def search(self, queries: list[str], k: int) -> Sequence[Sequence[Any]]: ...


class _SearchBatchAdapter:
    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def search(self, queries: list[str], k: int) -> Sequence[Sequence[Any]]:
        result: Sequence[Sequence[Any]] = self.obj.search_batch(queries, k=k)
        return result


class _FunctionAdapter:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def search(self, queries: list[str], k: int) -> Sequence[Sequence[Any]]:
        result: Sequence[Sequence[Any]] = self.fn(queries, k)
        return result


def as_batch_retriever(retriever: Any) -> BatchRetriever:
    """Adapt ``retriever`` to :class:`BatchRetriever`.

    Accepted: an object with ``search_batch(queries, k=...)`` (e.g.
    :class:`~rerank_plugins.retrieval.FaissIndex`), an object with ``search(queries, k)``
    (the protocol itself), or a function ``(queries, k) -> rankings``.
    """
    if hasattr(retriever, "search_batch"):
        return _SearchBatchAdapter(retriever)
    if callable(getattr(retriever, "search", None)):
        return retriever
    if callable(retriever):
        return _FunctionAdapter(retriever)
    raise ValueError(
        "retriever must have search_batch(queries, k), search(queries, k), or be a function (queries, k) -> rankings"
    )


@dataclass(frozen=True, slots=True)
class DecompositionResult:
    """What :meth:`DecompositionRetriever.retrieve` found, and how.

    Attributes:
        question: the original question.
        decomposition: the sub-questions (or the fallback).
        queries: the queries actually retrieved with (original first unless excluded).
        documents: the final documents, best first (reranked when a reranker is set).
        pool: the whole fused pool before reranking.
        timings: seconds spent in ``decompose``, ``retrieve``, ``fuse`` and ``rerank``.
    """

    question: str
    decomposition: Decomposition
    queries: tuple[str, ...]
    documents: tuple[PooledDocument, ...]
    pool: tuple[PooledDocument, ...]
    timings: dict[str, float]


class DecompositionRetriever:
    """Decompose, retrieve for every query, fuse, rerank against the original question.

    Args:
        retriever: anything :func:`as_batch_retriever` accepts (a FaissIndex works as is).
        decomposer: a :class:`Decomposer`; ``None`` retrieves with the question alone.
        reranker: any :class:`~rerank_plugins.types.Reranker` (e.g. ``registry.create("pointwise",
            model=...)``); ``None`` returns the fused order.
        k: documents retrieved per query.
        fusion: ``"rrf"`` (default), ``"max"`` or ``"none"`` (see :func:`fuse`).
        rrf_k: the RRF constant.
        pool_size: rerank only the first ``pool_size`` fused documents (``None``: the whole pool).
        top_k: documents returned (``None``: all reranked / pooled).
        include_original: retrieve with the original question besides the sub-questions.

    Example:
        >>> from rerank_plugins.retrieval import FaissIndex, HashingEmbedder
        >>> index = FaissIndex.build(["NVIDIA profit", "Apple profit", "pears"], embedder=HashingEmbedder(64))
        >>> llm = lambda prompt: "1. NVIDIA profit\\n2. Apple profit"
        >>> pipe = DecompositionRetriever(index, decomposer=Decomposer(llm), k=1)
        >>> [d.text for d in pipe.retrieve("Who earned more, NVIDIA or Apple?").documents]
        ['NVIDIA profit', 'Apple profit']
    """

    def __init__(
        self,
        retriever: Any,
        *,
        decomposer: Decomposer | None = None,
        reranker: Reranker | None = None,
        k: int = 10,
        fusion: FusionMethod = "rrf",
        rrf_k: int = 60,
        pool_size: int | None = None,
        top_k: int | None = None,
        include_original: bool = True,
    ) -> None:
        if fusion not in FUSION_METHODS:
            raise ValueError(f"fusion must be one of {', '.join(FUSION_METHODS)}; got {fusion!r}")
        if isinstance(rrf_k, bool) or not isinstance(rrf_k, (int, float)) or rrf_k < 0:
            raise ValueError(f"rrf_k must be a non-negative number, got {rrf_k!r}")
        if decomposer is not None and not isinstance(decomposer, Decomposer):
            raise ValueError(f"decomposer must be a Decomposer or None, got {type(decomposer).__name__}")
        if reranker is not None and not isinstance(reranker, Reranker):
            raise ValueError("reranker must implement rerank(query, documents, top_k) and arerank (a Reranker)")
        self.retriever = as_batch_retriever(retriever)
        self.decomposer = decomposer
        self.reranker = reranker
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        for name, value in (("pool_size", pool_size), ("top_k", top_k)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        self.k = k
        self.fusion: FusionMethod = fusion
        self.rrf_k = rrf_k
        self.pool_size = pool_size
        self.top_k = top_k
        if not isinstance(include_original, bool):
            raise ValueError(f"include_original must be a bool (True or False), got {include_original!r}")
        self.include_original = include_original

    def _fuse(
        self, queries: list[str], rankings: Sequence[Sequence[Any]], timings: dict[str, float]
    ) -> list[PooledDocument]:
        t0 = time.perf_counter()
        if len(rankings) != len(queries):
            raise ValueError(f"the retriever returned {len(rankings)} rankings for {len(queries)} queries")
        pool = fuse(rankings, queries=queries, method=self.fusion, rrf_k=self.rrf_k)
        timings["fuse"] = time.perf_counter() - t0
        return pool

    def retrieve(self, question: str) -> DecompositionResult:
        """Run the pipeline for ``question``."""
        question = validate_query(question)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        dec = self.decomposer.decompose(question) if self.decomposer else Decomposition.trivial(question)
        timings["decompose"] = time.perf_counter() - t0
        queries = query_list(dec, include_original=self.include_original)
        t0 = time.perf_counter()
        rankings = self.retriever.search(queries, self.k)
        timings["retrieve"] = time.perf_counter() - t0
        pool = self._fuse(queries, rankings, timings)
        t0 = time.perf_counter()
        if self.reranker is not None and pool:
            docs = rerank_pool(question, pool, self.reranker, top_k=self.top_k, pool_size=self.pool_size)
        else:
            docs = cut(pool, self.top_k)
        timings["rerank"] = time.perf_counter() - t0
        return DecompositionResult(question, dec, tuple(queries), tuple(docs), tuple(pool), timings)

    async def aretrieve(self, question: str) -> DecompositionResult:
        """Async :meth:`retrieve`: the LLM call and the rerank do not block the event loop."""
        question = validate_query(question)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        dec = await self.decomposer.adecompose(question) if self.decomposer else Decomposition.trivial(question)
        timings["decompose"] = time.perf_counter() - t0
        queries = query_list(dec, include_original=self.include_original)
        t0 = time.perf_counter()
        rankings = await asyncio.to_thread(self.retriever.search, queries, self.k)
        timings["retrieve"] = time.perf_counter() - t0
        pool = self._fuse(queries, rankings, timings)
        t0 = time.perf_counter()
        if self.reranker is not None and pool:
            docs = await arerank_pool(question, pool, self.reranker, top_k=self.top_k, pool_size=self.pool_size)
        else:
            docs = cut(pool, self.top_k)
        timings["rerank"] = time.perf_counter() - t0
        return DecompositionResult(question, dec, tuple(queries), tuple(docs), tuple(pool), timings)

    def __repr__(self) -> str:
        return (
            f"DecompositionRetriever(k={self.k}, fusion={self.fusion!r}, decomposer={self.decomposer!r}, "
            f"reranker={self.reranker!r})"
        )
