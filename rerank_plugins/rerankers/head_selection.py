"""Choosing attention heads: score every (layer, head) on judged queries, keep the best.

Each head ranks a query's candidates by its own calibrated query-to-document attention (the
same prompt, calibration and outlier rule as :class:`~rerank_plugins.rerankers.attention.AttentionReranker`);
a head's score is a ranking measure of that order against the judgements, averaged over the
queries. :func:`select_heads` keeps the best ``n_heads`` and returns a
:class:`~rerank_plugins.rerankers.heads.HeadProfile` (QRHead: "Query-Focused Retrieval Heads
Improve Long-Context Reasoning and Re-ranking", Zhang et al., EMNLP 2025).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rerank_plugins.rerankers.attention import AttentionReranker
from rerank_plugins.rerankers.heads import HeadProfile, HeadScore, backend_identity, identity_matches

__all__ = ["JudgedQuery", "mean_relevant_rank", "ndcg_at_k", "pool_profiles", "select_heads"]

logger = logging.getLogger(__name__)


def _order(scores: torch.Tensor) -> torch.Tensor:
    """Per row, document indices best first; equal scores keep input order (as ``hits_from_scores``)."""
    return torch.sort(-scores.double(), dim=-1, stable=True).indices


def ndcg_at_k(scores: torch.Tensor, grades: Sequence[int], k: int = 10) -> torch.Tensor:
    """nDCG@k of each row's ranking of the same documents (gain = grade, log2 discount).

    The ideal ranking is taken over ``grades`` (the candidates' judgments), as trec_eval does
    for a run that holds every judged document.

    Args:
        scores: ``[rows, n]`` one ranking score per document and row (e.g. per head).
        grades: ``n`` graded judgments (0 = not relevant).
        k: cut-off.

    Example:
        >>> ndcg_at_k(torch.tensor([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5]]), [1, 0, 0], k=10).tolist()
        [1.0, 0.5]
    """
    g = torch.tensor([float(x) for x in grades], dtype=torch.float64)
    n = g.shape[0]
    discount = 1.0 / torch.log2(torch.arange(2, n + 2, dtype=torch.float64))
    discount[k:] = 0.0
    dcg = (g[_order(scores)] * discount).sum(-1)
    ideal = (torch.sort(g, descending=True).values * discount).sum()
    if float(ideal) == 0.0:
        return torch.zeros(scores.shape[0], dtype=torch.float64)
    return dcg / ideal


def mean_relevant_rank(scores: torch.Tensor, grades: Sequence[int], rel_level: int = 1) -> torch.Tensor:
    """Per row, ``1 - (mean rank of the relevant documents - 1) / n``: 1 puts them first, near 0 last.

    Example:
        >>> mean_relevant_rank(torch.tensor([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5]]), [1, 0, 0]).tolist()
        [1.0, 0.33333333333333337]
    """
    relevant = torch.tensor([int(x) >= rel_level for x in grades])
    n = relevant.shape[0]
    if not bool(relevant.any()):
        return torch.zeros(scores.shape[0], dtype=torch.float64)
    ranks = torch.empty(scores.shape, dtype=torch.float64)
    order = _order(scores)
    ranks.scatter_(-1, order, torch.arange(1, n + 1, dtype=torch.float64).expand(scores.shape).contiguous())
    return 1.0 - (ranks[:, relevant].mean(-1) - 1.0) / n


def _metric(name: str, rel_level: int) -> Callable[[torch.Tensor, Sequence[int]], torch.Tensor]:
    key = name.lower()
    if key.startswith("ndcg@"):
        try:
            k = int(key.split("@", 1)[1])
        except ValueError:
            k = 0
        if k < 1:
            raise ValueError(f"metric must be 'ndcg@K' with K >= 1 or 'rank', got {name!r}")
        return lambda scores, grades: ndcg_at_k(scores, grades, k)
    if key == "rank":
        return lambda scores, grades: mean_relevant_rank(scores, grades, rel_level)
    raise ValueError(f"metric must be 'ndcg@K' (e.g. 'ndcg@10') or 'rank', got {name!r}")


# ---------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class JudgedQuery:
    """A query, its candidate documents in first-stage order, and one graded judgment per candidate."""

    qid: str
    query: str
    documents: tuple[str, ...]
    grades: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.documents) != len(self.grades):
            raise ValueError(f"query {self.qid!r}: {len(self.documents)} documents but {len(self.grades)} grades")


def select_heads(
    backend: Any,
    queries: Sequence[JudgedQuery],
    *,
    n_heads: int = 8,
    metric: str = "ndcg@10",
    rel_level: int = 1,
    data: dict[str, Any] | None = None,
    progress: bool | None = None,
    **attention_options: Any,
) -> HeadProfile:
    """Score every (layer, head) of ``backend``'s model on judged queries and keep the best ``n_heads``.

    Per query, the candidates go into one attention prompt exactly as ``AttentionReranker``
    builds it (same ``attention_options``); each head's calibrated query-to-document attention
    (the real query's minus the content-free query's, low outlier tokens dropped, summed per
    document) ranks the candidates, and ``metric`` scores that ranking against the grades.
    A head's score is the mean over queries; heads are kept best first (ties: lower layer,
    then lower head). Queries with no relevant candidate are left out (and counted).

    Args:
        backend: a scoring backend with the ``"attention"`` primitive, or a model name.
        queries: judged queries (their candidates must fit one prompt: lower their number or
            ``doc_max_tokens`` otherwise).
        n_heads: how many heads to keep.
        metric: ``"ndcg@K"`` (graded gains) or ``"rank"`` (:func:`mean_relevant_rank`).
        rel_level: the lowest grade counted relevant (which queries are usable; ``"rank"``).
        data: what the queries are (source files, split, skip/limit...), recorded as is.
        progress: a tqdm bar (default: only on a terminal).
        **attention_options: ``AttentionReranker`` options (prompt, order, doc_max_tokens,
            calibrate, outlier_std, content_free_query); ``heads`` and ``layers`` are not allowed.

    Returns:
        The profile (write it with :meth:`HeadProfile.save`); ``selection`` also records the
        same metric for every head summed (ICR's default) on the same queries.

    Example:
        >>> q = JudgedQuery("1", "capital of France", ("Berlin is in Germany.", "Paris is France's capital."), (0, 1))
        >>> profile = select_heads("path/to/Qwen2.5-0.5B-Instruct", [q], n_heads=4)  # doctest: +SKIP
        >>> profile.save("qwen-heads.json")  # doctest: +SKIP
    """

    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"n_heads must be a positive int, got {n_heads!r}")
    if "heads" in attention_options or "layers" in attention_options:
        raise ValueError("select_heads scores every head of every layer: do not pass heads or layers")
    score = _metric(metric, rel_level)
    reranker = AttentionReranker(backend, heads=None, **attention_options)
    n_layers, n_per_layer = reranker.core.attention_layout()
    usable = [q for q in queries if any(g >= rel_level for g in q.grades)]
    if not usable:
        raise ValueError("no query has a relevant candidate: nothing to choose heads on")
    started = time.perf_counter()
    total = torch.zeros(n_layers * n_per_layer, dtype=torch.float64)
    all_heads = torch.zeros((), dtype=torch.float64)
    tokens = 0
    from tqdm.auto import tqdm

    show = progress if progress is not None else _is_terminal()
    for q in tqdm(usable, desc="select-heads", unit="query", disable=not show):
        docs, summed, n_tokens = reranker.head_document_scores(q.query, list(q.documents))
        tokens += n_tokens
        total += score(docs, q.grades)
        all_heads += score(summed[None], q.grades)[0]
    mean = total / len(usable)
    chosen = _best_heads(mean, n_per_layer, n_heads)
    options = reranker.options.settings()
    selection = {
        "method": "per-head calibrated query-to-document attention (QRHead-style), mean over queries",
        "metric": metric,
        "rel_level": rel_level,
        "n_heads": len(chosen),
        "queries": len(usable),
        "queries_without_relevant": len(queries) - len(usable),
        "qids": [q.qid for q in usable],
        # the same metric for ICR's sum over every head, on the same queries (in-sample)
        "all_heads_score": round(float(all_heads) / len(usable), 4),
        "prompt": options["prompt"],
        "order": options["order"],
        "doc_max_tokens": options["doc_max_tokens"],
        "calibrate": options["calibrate"],
        "outlier_std": options["outlier_std"],
        "content_free_query": options["content_free_query"],
        "prompt_tokens": tokens,
        "seconds": round(time.perf_counter() - started, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": dict(data or {}),
    }
    identity = backend_identity(reranker.core) or {"name": reranker.core.name}
    grid = mean.view(n_layers, n_per_layer)
    return HeadProfile(
        model=identity,
        heads=chosen,
        selection=selection,
        all_scores=[[round(float(x), 4) for x in row] for row in grid],
    )


def _best_heads(mean: torch.Tensor, n_per_layer: int, n_heads: int) -> list[HeadScore]:
    """The ``n_heads`` best of every head's score (flat, layer-major), best first; ties: lower layer, then head."""
    order = sorted(range(len(mean)), key=lambda j: (-float(mean[j]), j))[:n_heads]
    return [HeadScore(j // n_per_layer, j % n_per_layer, round(float(mean[j]), 4)) for j in order]


#: what two selections must share to be pooled: the same measure of the same attention scores
POOLED_SETTINGS = ("metric", "rel_level", "prompt", "order", "doc_max_tokens", "calibrate", "outlier_std",
                   "content_free_query")  # fmt: skip


def pool_profiles(profiles: Sequence[HeadProfile], *, n_heads: int = 8) -> HeadProfile:
    """Choose heads on the queries of several selections at once (e.g. SciFact claims and HotpotQA questions).

    Each profile holds every head's mean score over its own queries (``all_scores``); the pooled
    score of a head is its mean over all the queries, so a selection counts by its number of
    queries, exactly as :func:`select_heads` on the union would (up to the 4 decimals kept per
    head). The profiles must come from the same model (:func:`identity_matches`) and the same
    metric and attention settings; no model is loaded.

    Example:
        >>> a = HeadProfile({"name": "m"}, [HeadScore(0, 0, 0.9)], {"queries": 3, "metric": "ndcg@10"},
        ...                 [[0.9, 0.1], [0.2, 0.3]])
        >>> b = HeadProfile({"name": "m"}, [HeadScore(1, 1, 0.8)], {"queries": 1, "metric": "ndcg@10"},
        ...                 [[0.1, 0.1], [0.2, 0.8]])
        >>> [(h.layer, h.head, h.score) for h in pool_profiles([a, b], n_heads=2).heads]
        [(0, 0, 0.7), (1, 1, 0.425)]
    """
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"n_heads must be a positive int, got {n_heads!r}")
    if len(profiles) < 2:
        raise ValueError(f"pooling needs at least two profiles, got {len(profiles)}")
    first = profiles[0]
    grids, counts = [], []
    for p in profiles:
        where = p.label if p.path is None else str(p.path)
        if p.all_scores is None:
            raise ValueError(f"{where}: has no 'all_scores' (every head's score), so it cannot be pooled")
        if p is not first and p.model != first.model and not identity_matches(first.model, p.model):
            raise ValueError(f"{where}: chosen on another model than {first.label} ({p.model.get('name')!r})")
        for key in POOLED_SETTINGS:
            if p.selection.get(key) != first.selection.get(key):
                raise ValueError(f"{where}: {key} {p.selection.get(key)!r} differs from {first.label}'s "
                                 f"{first.selection.get(key)!r}; only the same measure of the same scores pools")
        n = p.selection.get("queries")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{where}: selection.queries must be a positive int, got {n!r}")
        grid = torch.tensor(p.all_scores, dtype=torch.float64)
        if grids and grid.shape != grids[0].shape:
            raise ValueError(f"{where}: all_scores is {list(grid.shape)}, not {list(grids[0].shape)}")
        grids.append(grid)
        counts.append(n)
    weights = torch.tensor(counts, dtype=torch.float64)
    grid = (torch.stack(grids) * weights[:, None, None]).sum(0) / weights.sum()
    n_per_layer = grid.shape[1]
    mean = grid.flatten()
    chosen = _best_heads(mean, n_per_layer, n_heads)
    sources = [{k: v for k, v in p.selection.items() if k not in POOLED_SETTINGS} for p in profiles]
    all_heads = [p.selection.get("all_heads_score") for p in profiles]
    selection = {
        "method": "pooled: every head's mean score over the queries of all the sources",
        **{key: first.selection.get(key) for key in POOLED_SETTINGS},
        "n_heads": len(chosen),
        "queries": sum(counts),
        "all_heads_score": (
            round(sum(s * n for s, n in zip(all_heads, counts, strict=True)) / sum(counts), 4)
            if all(isinstance(s, (int, float)) for s in all_heads) else None
        ),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sources": sources,
    }  # fmt: skip
    return HeadProfile(
        model=first.model,
        heads=chosen,
        selection=selection,
        all_scores=[[round(float(x), 4) for x in row] for row in grid],
    )


def _is_terminal() -> bool:
    import sys

    return sys.stderr.isatty()
