"""The reranking contract: ``Reranker``, ``Hit`` and the shared argument checks.

Every strategy returns a permutation of the input indices (cut to ``top_k``), each with a
float score where higher is better. Nothing is ever lost, duplicated or invented, whatever a
model emits: strategies produce one score per input document and :func:`hits_from_scores`
turns those into the ranked list.
"""

from __future__ import annotations

import asyncio
import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "BaseReranker",
    "Call",
    "Hit",
    "Reranker",
    "detached_metadata",
    "hits_from_scores",
    "validate_documents",
    "validate_query",
    "validate_top_k",
]


def detached_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``metadata`` whose edits (nested ones too) never reach the original.

    Each value is deep-copied; a value that cannot be copied (a client, a lock) is kept by
    reference, so a result can always be built.

    Example:
        >>> md = {"tags": ["a"]}
        >>> out = detached_metadata(md); out["tags"].append("b"); md
        {'tags': ['a']}
    """
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        try:
            out[key] = copy.deepcopy(value)
        except Exception:  # uncopyable objects (locks, sockets, C handles) stay shared
            out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class Hit:
    """One ranked document: its position in the input list and its rerank score.

    Example:
        >>> Hit(index=2, score=0.5)
        Hit(index=2, score=0.5)
    """

    index: int
    score: float


@runtime_checkable
class Reranker(Protocol):
    """Anything that reranks documents for a query.

    ``rerank`` returns a permutation of ``range(len(documents))`` cut to ``top_k``, as
    :class:`Hit` objects ordered best first.
    """

    def rerank(self, query: str, documents: Sequence[str], top_k: int | None = None) -> list[Hit]: ...

    async def arerank(
        self, query: str, documents: Sequence[str], top_k: int | None = None
    ) -> list[Hit]: ...


def validate_query(query: object) -> str:
    """Return ``query`` if it is a non-blank string, else raise ``ValueError`` naming it."""
    if not isinstance(query, str):
        raise ValueError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query must be a non-empty string (got an empty or blank query)")
    return query


def validate_documents(documents: object) -> list[str]:
    """Return ``documents`` as a list of str, else raise ``ValueError`` naming the bad item."""
    if isinstance(documents, (str, bytes)):
        raise ValueError("documents must be a sequence of str, got a single string")
    if not isinstance(documents, Sequence):
        raise ValueError(f"documents must be a sequence of str, got {type(documents).__name__}")
    out = list(documents)
    for i, doc in enumerate(out):
        if not isinstance(doc, str):
            raise ValueError(f"documents[{i}] must be a str, got {type(doc).__name__}")
    return out


def validate_top_k(top_k: object) -> int | None:
    """Return ``top_k`` if it is ``None`` or a positive int, else raise ``ValueError``."""
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be a positive int or None, got {top_k}")
    return top_k


def hits_from_scores(scores: Sequence[float], top_k: int | None = None) -> list[Hit]:
    """Rank indices by score, best first; ties keep input order.

    Non-finite scores (NaN) rank last instead of corrupting the sort.

    Example:
        >>> hits_from_scores([0.1, 0.9, 0.5], top_k=2)
        [Hit(index=1, score=0.9), Hit(index=2, score=0.5)]
    """
    clean = [float(s) for s in scores]
    order = sorted(
        range(len(clean)),
        key=lambda i: (0 if not math.isnan(clean[i]) else 1, -clean[i] if not math.isnan(clean[i]) else 0.0, i),
    )
    if top_k is not None:
        order = order[:top_k]
    return [Hit(index=i, score=clean[i]) for i in order]


@dataclass
class Call:
    """One rerank call as a strategy sees it: the caller's ``top_k`` and the call's counters.

    Statistics travel with the call, never on the reranker, so concurrent calls (``arerank``
    runs in threads) cannot mix their counters.

    Example:
        >>> call = Call(top_k=3)
        >>> call.count("windows"); call.count("rows", 4); call.stats
        {'windows': 1.0, 'rows': 4.0}
    """

    top_k: int | None = None
    stats: dict[str, float] = field(default_factory=dict)

    def count(self, name: str, n: float = 1) -> None:
        """Add ``n`` to the counter ``name``."""
        self.stats[name] = self.stats.get(name, 0.0) + float(n)


class BaseReranker(ABC):
    """Narrow base for strategies: implement :meth:`score`, get the whole contract.

    ``score(query, documents)`` returns one float per document (higher is better). The base
    validates arguments, handles the empty list, sorts and cuts to ``top_k``. Strategies that
    batch several queries, read the caller's ``top_k`` or count work override
    :meth:`_score_call`, the one path behind ``rerank``, ``arerank`` and ``rerank_batch``.
    """

    #: registry name of the strategy, e.g. ``"pointwise"``
    name: str = ""
    #: True when a document's score depends only on (query, document), not on the other
    #: documents in the call: scores (and :meth:`relevance`) from separate calls are then comparable
    per_document: bool = False

    @abstractmethod
    def score(self, query: str, documents: list[str]) -> list[float]:
        """One score per document, aligned with ``documents``; ``documents`` is non-empty."""

    def score_batch(self, queries: list[str], documents: list[list[str]]) -> list[list[float]]:
        """Scores for several (query, documents) requests; the default loops over them."""
        return [self.score(q, d) for q, d in zip(queries, documents, strict=True)]

    def _score_call(self, queries: list[str], documents: list[list[str]], call: Call) -> list[list[float]]:
        """Scores for validated, non-empty requests; the default is :meth:`score_batch`."""
        return self.score_batch(queries, documents)

    def relevance(self, scores: Sequence[float]) -> list[float]:
        """One call's scores (every document of the call) as relevance in [0, 1], aligned with them.

        The default is min-max within the call: 1 for the best document, 0 for the worst, 1 for
        every document when all scores are equal; comparable only within one call. Strategies
        whose scores have a meaning of their own override it (pointwise: a probability).

        Example:
            >>> from rerank_plugins.testing import KeywordReranker
            >>> KeywordReranker().relevance([2.0, 0.0, 1.0])
            [1.0, 0.0, 0.5]
        """
        finite = [float(s) for s in scores if math.isfinite(float(s))]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
        return [
            0.0 if not math.isfinite(float(s)) else 1.0 if hi == lo else (float(s) - lo) / (hi - lo) for s in scores
        ]

    def rerank_scores(
        self, query: str, documents: Sequence[str], top_k: int | None = None
    ) -> tuple[list[float], dict[str, float]]:
        """Every document's score, aligned with ``documents``, and the call's counters.

        The scores are those :meth:`rerank` sorts (the caller's ``top_k`` reaches the strategy,
        e.g. heapsort's ``k``), none cut; :mod:`rerank_plugins.fusion` builds on them.

        Example:
            >>> from rerank_plugins.testing import KeywordReranker
            >>> KeywordReranker().rerank_scores("red", ["blue", "red"])
            ([0.0, 1.0], {})
        """
        scored, _, stats = self._scores_many([query], [documents], top_k, single=True)
        return scored[0], stats

    async def arerank_scores(
        self, query: str, documents: Sequence[str], top_k: int | None = None
    ) -> tuple[list[float], dict[str, float]]:
        """Async :meth:`rerank_scores` (in a worker thread, as :meth:`arerank`)."""
        return await asyncio.to_thread(self.rerank_scores, query, documents, top_k)

    def rerank_with_stats(
        self, query: str, documents: Sequence[str], top_k: int | None = None
    ) -> tuple[list[Hit], dict[str, float]]:
        """:meth:`rerank`, plus the strategy's counters for this call (windows, rows, comparisons...).

        Example:
            >>> from rerank_plugins.testing import KeywordReranker
            >>> KeywordReranker().rerank_with_stats("red", ["blue", "red"], top_k=1)
            ([Hit(index=1, score=1.0)], {})
        """
        hits, stats = self._rerank_many([query], [documents], top_k, single=True)
        return hits[0], stats

    def rerank(self, query: str, documents: Sequence[str], top_k: int | None = None) -> list[Hit]:
        """Rank ``documents`` for ``query``, best first, cut to ``top_k``."""
        return self.rerank_with_stats(query, documents, top_k)[0]

    def rerank_batch(
        self, queries: Sequence[str], documents: Sequence[Sequence[str]], top_k: int | None = None
    ) -> list[list[Hit]]:
        """Rerank several requests at once (strategies may batch their forward passes)."""
        return self._rerank_many(queries, documents, top_k)[0]

    def _rerank_many(
        self, queries: Sequence[str], documents: Sequence[Sequence[str]], top_k: object, single: bool = False
    ) -> tuple[list[list[Hit]], dict[str, float]]:
        scored, k, stats = self._scores_many(queries, documents, top_k, single)
        return [hits_from_scores(scores, k) for scores in scored], stats

    def _scores_many(
        self, queries: Sequence[str], documents: Sequence[Sequence[str]], top_k: object, single: bool = False
    ) -> tuple[list[list[float]], int | None, dict[str, float]]:
        """Validated requests scored through :meth:`_score_call`: scores per request (empty for no documents)."""
        if not single:
            if isinstance(queries, str) or not isinstance(queries, Sequence):
                raise ValueError("queries must be a sequence of str")
            if not isinstance(documents, Sequence) or len(documents) != len(queries):
                raise ValueError("documents must be a sequence with one list of documents per query")
        qs = [validate_query(q) for q in queries]
        ds = [validate_documents(d) for d in documents]
        call = Call(top_k=validate_top_k(top_k))
        live = [i for i, d in enumerate(ds) if d]
        results: list[list[float]] = [[] for _ in qs]
        if live:
            scored = self._score_call([qs[i] for i in live], [ds[i] for i in live], call)
            if len(scored) != len(live):
                raise RuntimeError(f"{type(self).__name__} scored {len(scored)} requests, expected {len(live)}")
            for i, scores in zip(live, scored, strict=True):
                results[i] = self._checked_scores(scores, len(ds[i]))
        return results, call.top_k, call.stats

    async def arerank(
        self, query: str, documents: Sequence[str], top_k: int | None = None
    ) -> list[Hit]:
        """Async :meth:`rerank`: runs in a worker thread; the core micro-batches concurrent calls."""
        return await asyncio.to_thread(self.rerank, query, documents, top_k)

    async def arerank_with_stats(
        self, query: str, documents: Sequence[str], top_k: int | None = None
    ) -> tuple[list[Hit], dict[str, float]]:
        """Async :meth:`rerank_with_stats`."""
        return await asyncio.to_thread(self.rerank_with_stats, query, documents, top_k)

    def _checked_scores(self, scores: Sequence[float], n: int) -> list[float]:
        out = [float(s) for s in scores]
        if len(out) != n:
            raise RuntimeError(
                f"{type(self).__name__}.score returned {len(out)} scores for {n} documents"
            )
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._repr_args()})"

    def _repr_args(self) -> str:
        return ""

    def describe(self) -> dict[str, Any]:
        """Settings of this reranker, for benchmark reports."""
        return {"name": self.name}
