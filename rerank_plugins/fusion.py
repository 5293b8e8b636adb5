"""Fusing a reranker's ranking with the first stage, normalised scores and thresholds: one path for every face.

A reranker built on a small model can rank worse than the retriever it follows; fusing the two
rankings keeps what each gets right. Two fusions, both over one call's documents:

* ``"rrf"``: reciprocal-rank fusion ("Reciprocal Rank Fusion outperforms Condorcet and
  individual Rank Learning Methods", Cormack, Clarke and Buettcher, SIGIR 2009) of the
  reranker's ranking with the input order: ``2w / (k + reranker rank) + 2(1 - w) / (k + input
  rank)``, ranks from 1, ``k`` = ``fusion_k`` (60), ``w`` = ``fusion_weight`` (0.5, where it is
  the plain sum ``1 / (k + reranker rank) + 1 / (k + input rank)``; weighted as in LangChain's
  ``EnsembleRetriever``). The input order is the first stage's ranking; its scores are not used.
* ``"interpolate"``: ``w * minmax(reranker scores) + (1 - w) * minmax(retrieval scores)``,
  ``w`` = ``fusion_weight`` (0.5), each min-max taken within the call (a convex combination of
  min-max normalised scores, as analysed in "An Analysis of Fusion Functions for Hybrid
  Retrieval", Bruch, Gai and Ingber, TOIS 2023). Without retrieval scores (a LangChain
  document carries none unless the vector store put one in its metadata) the input order stands
  in for them: ``1`` for the first document down to ``0`` for the last.

``"none"`` (the default) returns the reranker's own ranking and scores, unchanged.

:func:`rank_documents` is what both adapters call: the reranker scores every document (the
caller's ``top_k`` reaches it, as in ``rerank``), each document gets the strategy's normalised
relevance in [0, 1] (``BaseReranker.relevance``), the fusion orders them, documents whose
relevance is below ``score_threshold`` are dropped, and the rest is cut to ``top_k``. The
result is always a subset of the input indices in rank order: nothing lost except by the
threshold or the cut, nothing duplicated or invented; equal fused scores keep the input order.
:class:`FusedReranker` wraps any reranker so that its ``rerank`` returns the fused ranking.

Example:
    >>> from rerank_plugins.fusion import reciprocal_rank_fusion
    >>> [round(s, 5) for s in reciprocal_rank_fusion([0.1, 0.9, 0.5], k=60)]
    [0.03227, 0.03252, 0.032]
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, Strict

from rerank_plugins.options import Options, PositiveInt
from rerank_plugins.types import (
    BaseReranker,
    Call,
    Hit,
    Reranker,
    hits_from_scores,
    validate_documents,
    validate_query,
    validate_top_k,
)

__all__ = [
    "FusedReranker",
    "FusionMethod",
    "FusionOptions",
    "FusionSettings",
    "RankedDocument",
    "arank_documents",
    "fuse",
    "fused_hits",
    "interpolate",
    "min_max",
    "rank_documents",
    "ranks",
    "reciprocal_rank_fusion",
    "relevance_of",
]

FusionMethod = Literal["none", "rrf", "interpolate"]


class FusionSettings(BaseModel):
    """The fusion fields, shared by :class:`FusionOptions` and the adapters' classes."""

    fusion: FusionMethod = Field(
        default="none",
        description='Combine the reranker\'s ranking with the first stage: "none" (the reranker alone), "rrf" '
        '(reciprocal-rank fusion with the input order) or "interpolate" (min-max normalised reranker and '
        "retrieval scores; the input order stands in for missing retrieval scores).",
    )
    fusion_k: PositiveInt = Field(
        default=60, description="The k of reciprocal-rank fusion: each ranking adds weight / (k + rank)."
    )
    fusion_weight: Annotated[float, Strict()] = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="The reranker's weight in either fusion, the first stage's is 1 - it: of the reciprocal ranks in "
        '"rrf" (0.5: the plain sum), of the min-max normalised scores in "interpolate". Lower it for a reranker that '
        "ranks worse than the retriever on your data.",
    )


class FusionOptions(FusionSettings, Options):
    """Validated fusion settings.

    Example:
        >>> FusionOptions.build({"fusion": "rrf"}).fusion_k
        60
    """


# ---------------------------------------------------------------------------- pure functions


def ranks(scores: Sequence[float]) -> list[int]:
    """Each document's 1-based rank under ``scores`` (best first; ties and NaN as :func:`hits_from_scores`).

    Example:
        >>> ranks([0.1, 0.9, 0.5, 0.9])
        [4, 1, 3, 2]
    """
    out = [0] * len(scores)
    for r, hit in enumerate(hits_from_scores(scores), start=1):
        out[hit.index] = r
    return out


def _check_weight(weight: float) -> None:
    """The reranker's share in either fusion: a number in [0, 1] (NaN fails too)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight!r}")


def reciprocal_rank_fusion(scores: Sequence[float], k: int = 60, weight: float = 0.5) -> list[float]:
    """RRF of the ranking by ``scores`` with the input order: ``2w/(k + rank) + 2(1 - w)/(k + position + 1)``.

    The factor 2 makes the default ``weight`` of 0.5 the plain, unweighted RRF sum.

    Example:
        >>> fused = reciprocal_rank_fusion([0.0, 5.0], k=1)  # reranker flips a two-document list
        >>> fused[0] == fused[1]  # a tie: the input order breaks it
        True
        >>> reciprocal_rank_fusion([0.0, 5.0], k=1, weight=0.25)  # the input order weighs more
        [0.9166666666666666, 0.75]
    """
    _check_weight(weight)
    return [2.0 * (weight / (k + r) + (1.0 - weight) / (k + i + 1)) for i, r in enumerate(ranks(scores))]


def min_max(values: Sequence[float]) -> list[float]:
    """``(v - min) / (max - min)`` over the finite values; all equal gives 1.0, a non-finite value 0.0.

    Example:
        >>> min_max([2.0, 4.0, 3.0]), min_max([7.0]), min_max([1.0, float("nan")])
        ([0.0, 1.0, 0.5], [1.0], [1.0, 0.0])
    """
    finite = [float(v) for v in values if math.isfinite(float(v))]
    if not finite:
        return [0.0] * len(values)
    lo, hi = min(finite), max(finite)
    out = []
    for v in values:
        x = float(v)
        if not math.isfinite(x):
            out.append(0.0)
        elif hi == lo:
            out.append(1.0)
        else:
            out.append((x - lo) / (hi - lo))
    return out


def _input_order(n: int) -> list[float]:
    return [1.0 - i / (n - 1) if n > 1 else 1.0 for i in range(n)]


def interpolate(scores: Sequence[float], retrieval_scores: Sequence[float] | None, weight: float = 0.5) -> list[float]:
    """``weight * minmax(scores) + (1 - weight) * minmax(retrieval_scores)`` (input order without them).

    Example:
        >>> interpolate([0.0, 1.0, 2.0], [3.0, 2.0, 1.0], weight=0.75)
        [0.25, 0.5, 0.75]
    """
    _check_weight(weight)
    n = len(scores)
    first = _input_order(n) if retrieval_scores is None else min_max(retrieval_scores)
    if len(first) != n:
        raise ValueError(f"retrieval_scores has {len(first)} values for {n} documents")
    return [weight * a + (1.0 - weight) * b for a, b in zip(min_max(scores), first, strict=True)]


def fuse(
    scores: Sequence[float], options: FusionOptions | None = None, retrieval_scores: Sequence[float] | None = None
) -> list[float]:
    """The ranking scores of one call's documents under ``options`` (the scores themselves for ``"none"``).

    Example:
        >>> fuse([0.2, 0.8], FusionOptions(fusion="interpolate", fusion_weight=1.0))
        [0.0, 1.0]
    """
    opts = options or FusionOptions()
    if opts.fusion == "rrf":
        return reciprocal_rank_fusion(scores, opts.fusion_k, opts.fusion_weight)
    if opts.fusion == "interpolate":
        return interpolate(scores, retrieval_scores, opts.fusion_weight)
    return [float(s) for s in scores]


def fused_hits(
    scores: Sequence[float],
    options: FusionOptions | None = None,
    retrieval_scores: Sequence[float | None] | None = None,
    top_k: int | None = None,
) -> list[Hit]:
    """The fused ranking of one call's reranker ``scores``: what :class:`FusedReranker` returns.

    A benchmark derives a fused row from a reranker's recorded scores with it, so the row is the
    ranking the wrapped reranker would have produced, without running the model again.

    Example:
        >>> [h.index for h in fused_hits([0.0, 5.0, 1.0], FusionOptions(fusion="rrf", fusion_k=1))]
        [1, 0, 2]
    """
    return hits_from_scores(fuse(scores, options, _retrieval(retrieval_scores, len(scores))), validate_top_k(top_k))


def relevance_of(reranker: Any, scores: Sequence[float]) -> list[float]:
    """The reranker's normalised relevance of one call's scores (``relevance``), else min-max within the call."""
    method = getattr(reranker, "relevance", None)
    out = method(list(scores)) if callable(method) else min_max(scores)
    if len(out) != len(scores):
        raise RuntimeError(f"{type(reranker).__name__}.relevance returned {len(out)} values for {len(scores)} scores")
    return [min(max(float(x), 0.0), 1.0) if math.isfinite(float(x)) else 0.0 for x in out]


# ---------------------------------------------------------------------------- the adapters' path


@dataclass(frozen=True, slots=True)
class RankedDocument:
    """One result of :func:`rank_documents`.

    Attributes:
        index: position in the input list.
        score: the ranking score (the fused score with fusion, else ``rerank_score``).
        rerank_score: the reranker's own score.
        relevance: the reranker's normalised relevance in [0, 1] (what ``score_threshold`` judges).
    """

    index: int
    score: float
    rerank_score: float
    relevance: float


def _retrieval(retrieval_scores: Sequence[float | None] | None, n: int) -> list[float] | None:
    """Retrieval scores as floats, or ``None`` when any is missing or not a finite number."""
    if retrieval_scores is None:
        return None
    values = list(retrieval_scores)
    if len(values) != n:
        raise ValueError(f"retrieval_scores has {len(values)} values for {n} documents")
    out = []
    for v in values:
        if v is None or isinstance(v, bool):
            return None
        try:
            x = float(v)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(x):
            return None
        out.append(x)
    return out


def _threshold(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"score_threshold must be a number in [0, 1] or None, got {value!r}")
    return float(value)


def _assemble(
    reranker: Any,
    scores: list[float],
    retrieval: Sequence[float | None] | None,
    fusion: FusionOptions,
    threshold: float | None,
    top_k: int | None,
) -> list[RankedDocument]:
    relevance = relevance_of(reranker, scores)
    out = [
        RankedDocument(h.index, h.score, scores[h.index], relevance[h.index])
        for h in fused_hits(scores, fusion, retrieval)
        if threshold is None or relevance[h.index] >= threshold
    ]
    return out[:top_k] if top_k is not None else out


def _scores_from_hits(hits: Sequence[Hit], n: int, who: object) -> list[float]:
    scores: list[float | None] = [None] * n
    for h in hits:
        if not 0 <= h.index < n or scores[h.index] is not None:
            raise RuntimeError(f"{type(who).__name__} returned index {h.index} for {n} documents: not a permutation")
        scores[h.index] = float(h.score)
    if any(s is None for s in scores):
        raise RuntimeError(f"{type(who).__name__} returned {len(hits)} hits for {n} documents with top_k=None")
    return [float(s) for s in scores]  # type: ignore[arg-type]


def _prepare(
    query: str, documents: Sequence[str], top_k: int | None, fusion: FusionOptions | dict[str, Any] | None,
    score_threshold: float | None,
) -> tuple[str, list[str], int | None, FusionOptions, float | None]:
    opts = fusion if isinstance(fusion, FusionOptions) else FusionOptions.build(fusion or {})
    docs = validate_documents(documents)
    return validate_query(query), docs, validate_top_k(top_k), opts, _threshold(score_threshold)


def rank_documents(
    reranker: Reranker,
    query: str,
    documents: Sequence[str],
    *,
    top_k: int | None = None,
    retrieval_scores: Sequence[float | None] | None = None,
    fusion: FusionOptions | dict[str, Any] | None = None,
    score_threshold: float | None = None,
) -> list[RankedDocument]:
    """Rerank, fuse with the first stage, normalise, threshold and cut: the adapters' one path.

    Args:
        reranker: any reranker. A :class:`~rerank_plugins.types.BaseReranker` scores every
            document with ``top_k`` passed on (``rerank_scores``); another ``Reranker`` is
            called with ``top_k=None`` (the contract makes ``top_k`` a cut) and cut here.
        query, documents: as for ``rerank``.
        top_k: how many results to return, after the threshold.
        retrieval_scores: the first stage's score per document (``interpolate`` only); ``None``,
            or any missing or non-finite value, makes the input order stand in for them.
        fusion: :class:`FusionOptions` (or their values); default ``"none"``.
        score_threshold: drop documents whose normalised relevance is below it (in [0, 1]).

    Example:
        >>> from rerank_plugins.testing import KeywordReranker
        >>> [(d.index, d.relevance) for d in rank_documents(KeywordReranker(), "red", ["blue", "red"])]
        [(1, 1.0), (0, 0.0)]
    """
    query, docs, k, opts, threshold = _prepare(query, documents, top_k, fusion, score_threshold)
    if not docs:
        return []
    if isinstance(reranker, BaseReranker):
        scores, _ = reranker.rerank_scores(query, docs, k)
    else:
        scores = _scores_from_hits(reranker.rerank(query, docs, None), len(docs), reranker)
    return _assemble(reranker, scores, retrieval_scores, opts, threshold, k)


async def arank_documents(
    reranker: Reranker,
    query: str,
    documents: Sequence[str],
    *,
    top_k: int | None = None,
    retrieval_scores: Sequence[float | None] | None = None,
    fusion: FusionOptions | dict[str, Any] | None = None,
    score_threshold: float | None = None,
) -> list[RankedDocument]:
    """Async :func:`rank_documents`: awaits the reranker's own coroutine (``arerank_scores`` / ``arerank``)."""
    query, docs, k, opts, threshold = _prepare(query, documents, top_k, fusion, score_threshold)
    if not docs:
        return []
    if isinstance(reranker, BaseReranker):
        scores, _ = await reranker.arerank_scores(query, docs, k)
    else:
        scores = _scores_from_hits(await reranker.arerank(query, docs, None), len(docs), reranker)
    return _assemble(reranker, scores, retrieval_scores, opts, threshold, k)


# ---------------------------------------------------------------------------- a reranker that fuses


class FusedReranker(BaseReranker):
    """Any reranker with its ranking fused with the input order (or given retrieval scores).

    ``rerank`` returns the fused ranking; hit scores are the fused scores. The wrapped
    reranker's counters come back from ``rerank_with_stats``.

    Args:
        reranker: the reranker to fuse.
        options: ready :class:`FusionOptions`, instead of keyword options.
        **kwargs: ``fusion`` (default ``"rrf"`` here), ``fusion_k``, ``fusion_weight``.

    Example:
        >>> from rerank_plugins.testing import KeywordReranker
        >>> fused = FusedReranker(KeywordReranker(), fusion="rrf")
        >>> [h.index for h in fused.rerank("red", ["blue", "green", "red"])]
        [0, 2, 1]
    """

    name = "fused"

    def __init__(self, reranker: Reranker, *, options: FusionOptions | None = None, **kwargs: Any) -> None:
        if options is not None and kwargs:
            raise ValueError(f"pass options= or keyword options, not both (got {sorted(kwargs)})")
        self.reranker = reranker
        self.options = options if options is not None else FusionOptions.build({"fusion": "rrf", **kwargs})
        self.core = getattr(reranker, "core", None)

    def score(self, query: str, documents: list[str]) -> list[float]:
        return self._score_call([query], [documents], Call())[0]

    def _score_call(self, queries: list[str], documents: list[list[str]], call: Call) -> list[list[float]]:
        inner = self.reranker
        if isinstance(inner, BaseReranker):
            scored = inner._score_call(queries, documents, call)
            scored = [inner._checked_scores(s, len(d)) for s, d in zip(scored, documents, strict=True)]
        else:
            pairs = zip(queries, documents, strict=True)
            scored = [_scores_from_hits(inner.rerank(q, d, None), len(d), inner) for q, d in pairs]
        return [fuse(s, self.options) for s in scored]

    def rerank_with_stats(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        *,
        retrieval_scores: Sequence[float | None] | None = None,
    ) -> tuple[list[Hit], dict[str, float]]:
        """:meth:`BaseReranker.rerank_with_stats`, fusing with ``retrieval_scores`` when given (``interpolate``)."""
        if retrieval_scores is None or self.options.fusion != "interpolate":
            return super().rerank_with_stats(query, documents, top_k)
        docs = validate_documents(documents)
        inner = self.reranker
        if isinstance(inner, BaseReranker):
            scores, stats = inner.rerank_scores(query, docs, top_k)
        else:
            scores, stats = _scores_from_hits(inner.rerank(validate_query(query), docs, None), len(docs), inner), {}
        return fused_hits(scores, self.options, retrieval_scores, top_k), stats

    async def arerank_with_stats(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        *,
        retrieval_scores: Sequence[float | None] | None = None,
    ) -> tuple[list[Hit], dict[str, float]]:
        return await asyncio.to_thread(self.rerank_with_stats, query, documents, top_k,
                                       retrieval_scores=retrieval_scores)

    def describe(self) -> dict[str, Any]:
        describe = getattr(self.reranker, "describe", None)
        inner = describe() if callable(describe) else {}
        return {**inner, **self.options.settings()}

    def _repr_args(self) -> str:
        return f"{self.reranker!r}, fusion={self.options.fusion!r}"
