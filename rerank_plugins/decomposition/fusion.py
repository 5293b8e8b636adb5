"""Fusion: several rankings become one deduplicated pool that remembers which query found what.

:func:`fuse` merges the rankings (reciprocal rank fusion by default; ``"max"`` score or
``"none"`` = first-seen order) and keeps, per document, every query that retrieved it with its
rank and score (:class:`Provenance`). :func:`rerank_pool` reranks the pool against the original
question with any :class:`~rerank_plugins.types.Reranker`.

Reciprocal rank fusion: Cormack, Clarke and Buettcher, "Reciprocal Rank Fusion outperforms
Condorcet and individual Rank Learning Methods", SIGIR 2009 (``1 / (k + rank)``, ``k = 60``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from rerank_plugins.types import Hit, Reranker, validate_top_k

__all__ = [
    "FOUND_BY_KEY",
    "FUSED_SCORE_KEY",
    "FUSION_METHODS",
    "FusionMethod",
    "PooledDocument",
    "Provenance",
    "arerank_pool",
    "check_fusion",
    "cut",
    "fuse",
    "rerank_pool",
]

FusionMethod = Literal["rrf", "max", "none"]
FUSION_METHODS: tuple[FusionMethod, ...] = ("rrf", "max", "none")

#: the metadata keys under which the framework faces put a document's trace
FOUND_BY_KEY = "found_by"
FUSED_SCORE_KEY = "fused_score"


def check_fusion(method: object, rrf_k: object, *, name: str = "method") -> None:
    """``ValueError`` unless ``method`` is a fusion method and ``rrf_k`` a non-negative number.

    Example:
        >>> check_fusion("rrf", 60) is None
        True
    """
    if method not in FUSION_METHODS:
        raise ValueError(f"{name} must be one of {', '.join(FUSION_METHODS)}; got {method!r}")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, (int, float)) or rrf_k < 0:
        raise ValueError(f"rrf_k must be a non-negative number, got {rrf_k!r}")


@dataclass(frozen=True, slots=True)
class Provenance:
    """One query that retrieved a document: its position in the query list, text, rank (1-based), score."""

    query_index: int
    query: str
    rank: int
    score: float


@dataclass(frozen=True, slots=True)
class PooledDocument:
    """A document of the fused pool.

    Attributes:
        id: the retriever's document id (the deduplication key).
        text: the document text (from its first retrieval).
        fused_score: the fusion score (RRF sum, max retrieval score, or minus the first-seen position).
        found_by: every query that retrieved it, in query order.
        rerank_score: the reranker's score against the original question (``None`` before reranking).
        payload: whatever object the retriever returned (a framework node or document), untouched.
    """

    id: str
    text: str
    fused_score: float
    found_by: tuple[Provenance, ...]
    rerank_score: float | None = None
    payload: Any = field(default=None, compare=False, repr=False)

    @property
    def score(self) -> float:
        """The rerank score when reranked, else the fusion score."""
        return self.rerank_score if self.rerank_score is not None else self.fused_score

    def trace(self) -> list[dict[str, Any]]:
        """``found_by`` as plain dicts (for metadata)."""
        return [
            {"query_index": p.query_index, "query": p.query, "rank": p.rank, "score": p.score} for p in self.found_by
        ]

    def trace_metadata(self) -> dict[str, Any]:
        """The trace as the framework faces store it in a document's metadata."""
        return {FOUND_BY_KEY: self.trace(), FUSED_SCORE_KEY: self.fused_score}


def _as_item(item: Any, where: str) -> tuple[str, float, str, Any]:
    if isinstance(item, (tuple, list)):
        if len(item) not in (3, 4):
            raise ValueError(f"{where} must be (id, score, text) or (id, score, text, payload), got {len(item)} fields")
        doc_id, score, text = item[0], item[1], item[2]
        payload = item[3] if len(item) == 4 else None
    elif all(hasattr(item, a) for a in ("id", "score", "text")):
        doc_id, score, text, payload = item.id, item.score, item.text, item
    else:
        raise ValueError(f"{where} must be an (id, score, text) tuple or have .id, .score and .text")
    if not isinstance(text, str):
        raise ValueError(f"{where}: text must be a str, got {type(text).__name__}")
    try:
        fscore = float(score) if score is not None else float("nan")
    except (TypeError, ValueError):
        raise ValueError(f"{where}: score must be a number, got {score!r}") from None
    return str(doc_id), fscore, text, payload


def fuse(
    rankings: Sequence[Sequence[Any]],
    *,
    queries: Sequence[str] | None = None,
    method: FusionMethod = "rrf",
    rrf_k: float = 60,
) -> list[PooledDocument]:
    """Merge several rankings into one pool, deduplicated by id, with a per-document trace.

    Args:
        rankings: one ranking per query, best first; items are ``(id, score, text)``,
            ``(id, score, text, payload)`` or objects with ``id``, ``score`` and ``text``. An
            id repeated inside one ranking counts at its best rank.
        queries: the query of each ranking (for the trace); default ``""``.
        method: ``"rrf"``: sum of ``1 / (rrf_k + rank)``; ``"max"``: the highest retrieval
            score (only meaningful when every ranking comes from the same retriever);
            ``"none"``: no fusion, first-seen order (query 0's ranking, then new documents of
            query 1, ...), fused score = minus that position.
        rrf_k: the RRF constant (60 in the paper).

    Returns:
        Pooled documents, best fused score first; ties keep first-seen order.

    Example:
        >>> pool = fuse([[("a", 0.9, "A"), ("b", 0.8, "B")], [("b", 0.7, "B"), ("c", 0.6, "C")]])
        >>> [(d.id, round(d.fused_score, 5)) for d in pool]
        [('b', 0.03252), ('a', 0.01639), ('c', 0.01613)]
        >>> [(p.query_index, p.rank) for p in pool[0].found_by]
        [(0, 2), (1, 1)]
    """
    check_fusion(method, rrf_k)
    if isinstance(rankings, (str, bytes)) or not isinstance(rankings, Sequence):
        raise ValueError("rankings must be a sequence of rankings (one per query)")
    if queries is not None and len(queries) != len(rankings):
        raise ValueError(f"queries has {len(queries)} entries for {len(rankings)} rankings")
    order: list[str] = []
    texts: dict[str, str] = {}
    payloads: dict[str, Any] = {}
    trace: dict[str, list[Provenance]] = {}
    for qi, ranking in enumerate(rankings):
        if isinstance(ranking, (str, bytes)) or not isinstance(ranking, Sequence):
            raise ValueError(f"rankings[{qi}] must be a sequence of retrieved items")
        seen_here: set[str] = set()
        for pos, item in enumerate(ranking):
            doc_id, score, text, payload = _as_item(item, f"rankings[{qi}][{pos}]")
            if doc_id in seen_here:  # a repeat inside one ranking counts once, at its best rank
                continue
            seen_here.add(doc_id)
            r = len(seen_here)
            if doc_id not in trace:
                order.append(doc_id)
                texts[doc_id] = text
                payloads[doc_id] = payload
                trace[doc_id] = []
            trace[doc_id].append(Provenance(qi, queries[qi] if queries is not None else "", r, score))
    fused: dict[str, float] = {}
    for pos, doc_id in enumerate(order):
        provs = trace[doc_id]
        if method == "rrf":
            fused[doc_id] = sum(1.0 / (rrf_k + p.rank) for p in provs)
        elif method == "max":
            finite = [p.score for p in provs if p.score == p.score]
            fused[doc_id] = max(finite) if finite else float("-inf")
        else:
            fused[doc_id] = -float(pos)
    position = {d: i for i, d in enumerate(order)}
    ranked = sorted(order, key=lambda d: (-fused[d], position[d]))
    return [PooledDocument(d, texts[d], fused[d], tuple(trace[d]), None, payloads[d]) for d in ranked]


def cut(pool: Sequence[PooledDocument], n: int | None) -> list[PooledDocument]:
    """The first ``n`` documents of the pool (``None``: all of them).

    Example:
        >>> [d.id for d in cut(fuse([[("a", 1.0, "A"), ("b", 0.5, "B")]]), 1)]
        ['a']
    """
    n = validate_top_k(n)
    return list(pool[:n] if n is not None else pool)


def rerank_pool(
    question: str,
    pool: Sequence[PooledDocument],
    reranker: Reranker,
    *,
    top_k: int | None = None,
    pool_size: int | None = None,
) -> list[PooledDocument]:
    """Rerank the (first ``pool_size`` of the) pool against the original ``question``.

    Example:
        >>> from rerank_plugins.testing import KeywordReranker
        >>> pool = fuse([[("a", 1.0, "red fox"), ("b", 0.5, "blue whale")]])
        >>> [(d.id, d.rerank_score) for d in rerank_pool("blue whale", pool, KeywordReranker())]
        [('b', 2.0), ('a', 0.0)]
    """
    docs = cut(pool, pool_size)
    return _reranked(docs, reranker.rerank(question, [d.text for d in docs], top_k))


async def arerank_pool(
    question: str,
    pool: Sequence[PooledDocument],
    reranker: Reranker,
    *,
    top_k: int | None = None,
    pool_size: int | None = None,
) -> list[PooledDocument]:
    """Async :func:`rerank_pool` (``reranker.arerank``)."""
    docs = cut(pool, pool_size)
    return _reranked(docs, await reranker.arerank(question, [d.text for d in docs], top_k))


def _reranked(docs: list[PooledDocument], hits: Sequence[Hit]) -> list[PooledDocument]:
    return [replace(docs[h.index], rerank_score=float(h.score)) for h in hits]
