"""The pipeline: decompose, retrieve for every query, fuse, rerank against the original question.

:class:`DecompositionRetriever` chains the steps over any retriever with a batched
``search(queries, k)`` (a :class:`~rerank_plugins.retrieval.FaissIndex` works as is). The steps
are written once, as a generator that yields each call waiting on a model or a retriever, then
the result; :meth:`~DecompositionRetriever.retrieve` makes those calls in the calling thread and
:meth:`~DecompositionRetriever.aretrieve` awaits them, so the two differ in nothing else. The
LlamaIndex and LangChain faces (the integration packages) turn their framework's retriever into
a :class:`BatchRetriever`, call this pipeline and convert its result back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, runtime_checkable

from rerank_plugins.decomposition.decomposer import Decomposer, Decomposition, query_list
from rerank_plugins.decomposition.fusion import (
    FusionMethod,
    PooledDocument,
    arerank_pool,
    check_fusion,
    cut,
    fuse,
    rerank_pool,
)
from rerank_plugins.types import Reranker, validate_query

__all__ = ["BatchRetriever", "DecompositionResult", "DecompositionRetriever", "as_batch_retriever"]


@runtime_checkable
class BatchRetriever(Protocol):
    """A retriever answering several queries at once: ``search(queries, k)`` -> one ranking per query.

    Items are ``(id, score, text)`` or ``(id, score, text, payload)`` tuples, or objects with
    ``id``, ``score`` and ``text``. A retriever may also offer ``async asearch(queries, k)``
    with the same result, which :meth:`DecompositionRetriever.aretrieve` awaits; without it,
    ``aretrieve`` calls ``search`` once per query, each in a worker thread, all at once (so
    ``search`` must be safe to call from several threads).
    """

    def search(self, queries: list[str], k: int) -> Sequence[Sequence[Any]]: ...


class _SearchBatchAdapter:
    """An index with ``search_batch`` (a FaissIndex): every query in one embedding pass, also async.

    The async search stays one batch in one worker thread: a batch embeds faster than the same
    queries one by one, and an embedder's tokenizer may not be shared between threads.
    """

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def search(self, queries: list[str], k: int) -> Sequence[Sequence[Any]]:
        result: Sequence[Sequence[Any]] = self.obj.search_batch(queries, k=k)
        return result

    async def asearch(self, queries: list[str], k: int) -> Sequence[Sequence[Any]]:
        return await asyncio.to_thread(self.search, queries, k)


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
    (the protocol itself, with or without ``asearch``), or a function ``(queries, k) -> rankings``.
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


def _rankings(queries: Sequence[str], rankings: object) -> Sequence[Sequence[Any]]:
    """The retriever's answer, checked to hold one ranking per query."""
    if isinstance(rankings, (str, bytes)) or not isinstance(rankings, Sequence):
        raise ValueError(f"the retriever must return one ranking per query, got {type(rankings).__name__}")
    if len(rankings) != len(queries):
        raise ValueError(f"the retriever returned {len(rankings)} rankings for {len(queries)} queries")
    return rankings


async def _asearch(retriever: BatchRetriever, queries: list[str], k: int) -> Sequence[Sequence[Any]]:
    """The retriever's async batch search, or its sync search once per query in worker threads, all at once."""
    asearch = getattr(retriever, "asearch", None)
    if callable(asearch):
        rankings: Sequence[Sequence[Any]] = await asearch(queries, k)
        return rankings
    parts = await asyncio.gather(*(asyncio.to_thread(retriever.search, [q], k) for q in queries))
    return [ranking for q, part in zip(queries, parts, strict=True) for ranking in _rankings([q], part)]


class _Call:
    """One step of the pipeline that waits on a model or a retriever: the same call, sync or async."""

    def __init__(self, sync: Callable[..., Any], asynchronous: Callable[..., Awaitable[Any]], *args: Any, **kw: Any):
        self.sync, self.asynchronous, self.args, self.kwargs = sync, asynchronous, args, kw

    def run(self) -> Any:
        return self.sync(*self.args, **self.kwargs)

    async def arun(self) -> Any:
        return await self.asynchronous(*self.args, **self.kwargs)


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

    :meth:`retrieve` sends every query to the retriever in one batched ``search``;
    :meth:`aretrieve` runs them concurrently (see :class:`BatchRetriever`).

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
        rrf_k: float = 60,
        pool_size: int | None = None,
        top_k: int | None = None,
        include_original: bool = True,
    ) -> None:
        check_fusion(fusion, rrf_k, name="fusion")
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

    def retrieve(self, question: str, *, decomposition: Decomposition | None = None) -> DecompositionResult:
        """Run the pipeline for ``question``.

        Args:
            question: the original question.
            decomposition: sub-questions written beforehand (e.g. by
                :meth:`Decomposer.decompose_batch` for many questions at once); the decomposer
                is then not asked.
        """
        steps = self._steps(question, decomposition)
        step = next(steps)
        while isinstance(step, _Call):
            step = steps.send(step.run())
        return step

    async def aretrieve(self, question: str, *, decomposition: Decomposition | None = None) -> DecompositionResult:
        """Async :meth:`retrieve`: the LLM call, the searches and the rerank never block the event loop."""
        steps = self._steps(question, decomposition)
        step = next(steps)
        while isinstance(step, _Call):
            step = steps.send(await step.arun())
        return step

    def _steps(
        self, question: str, decomposition: Decomposition | None
    ) -> Generator[_Call | DecompositionResult, Any, None]:
        """The pipeline, once for both drivers: yields each waiting call, is sent its result, and
        yields the :class:`DecompositionResult` last."""
        question = validate_query(question)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if decomposition is not None:
            dec = _given(decomposition, question)
        elif self.decomposer is not None:
            dec = yield _Call(self.decomposer.decompose, self.decomposer.adecompose, question)
        else:
            dec = Decomposition.trivial(question)
        timings["decompose"] = time.perf_counter() - t0
        queries = query_list(dec, include_original=self.include_original)
        t0 = time.perf_counter()
        rankings = yield _Call(self.retriever.search, partial(_asearch, self.retriever), queries, self.k)
        timings["retrieve"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pool = fuse(_rankings(queries, rankings), queries=queries, method=self.fusion, rrf_k=self.rrf_k)
        timings["fuse"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if self.reranker is not None and pool:
            options = {"top_k": self.top_k, "pool_size": self.pool_size}
            docs = yield _Call(rerank_pool, arerank_pool, question, pool, self.reranker, **options)
        else:
            docs = cut(pool, self.top_k)
        timings["rerank"] = time.perf_counter() - t0
        yield DecompositionResult(question, dec, tuple(queries), tuple(docs), tuple(pool), timings)

    def __repr__(self) -> str:
        return (
            f"DecompositionRetriever(k={self.k}, fusion={self.fusion!r}, decomposer={self.decomposer!r}, "
            f"reranker={self.reranker!r})"
        )


def _given(decomposition: object, question: str) -> Decomposition:
    if not isinstance(decomposition, Decomposition):
        raise ValueError(f"decomposition must be a Decomposition or None, got {type(decomposition).__name__}")
    if decomposition.question != question:
        raise ValueError(f"decomposition is of another question ({decomposition.question!r}, not {question!r})")
    return decomposition
