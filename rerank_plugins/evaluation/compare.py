"""How far two benchmark runs of the same queries agree, ranking by ranking.

Two runs of one method (float32 against bfloat16, in-process against a served copy, old code
against new) can reach the same nDCG@10 with different rankings, or differ in nDCG@10 through a
few near-ties. This compares the stored per-query rankings of two ``results.json`` files
(:mod:`rerank_plugins.evaluation.bench`): for each pair of methods and each query both ran,
whether the reranked top ``depth`` is identical, whether the top 10 and top 5 are, Kendall's tau
between the two orders of the reranked documents, and the largest score difference of a
document when both runs scored the same documents.

Example:
    >>> a = {"config": {"depth": 3}, "methods": {"m": {"kind": "method", "records": {
    ...     "q": {"ranking": ["x", "y", "z"], "scores": [3.0, 2.0, 1.0]}}}}}
    >>> b = {"config": {"depth": 3}, "methods": {"m": {"kind": "method", "records": {
    ...     "q": {"ranking": ["x", "z", "y"], "scores": [3.0, 2.5, 2.0]}}}}}
    >>> row = compare_results(a, b)[0]
    >>> row["queries"], row["identical"], row["top5_identical"], round(row["kendall_tau"], 3)
    (1, 0, 0, 0.333)
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rerank_plugins.evaluation.measure import load_json, markdown_table

__all__ = ["compare_results", "load_results", "render_comparison"]


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A benchmark's results: ``path`` is its ``results.json`` or the folder holding it."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    data = load_json(p, "pass a results.json written by rerank-plugins bench")
    if data is None:
        raise FileNotFoundError(f"no benchmark results at {p}")
    if not isinstance(data.get("methods"), dict):
        raise ValueError(f"{p}: not a benchmark results file (no 'methods')")
    return data


def _methods(data: Mapping[str, Any]) -> list[str]:
    return [label for label, e in data["methods"].items() if e.get("kind") == "method"]


def _kendall_tau(a: Sequence[str], b: Sequence[str]) -> float:
    """Kendall's tau-b between two orders of the same documents (1.0 for one document)."""
    if len(a) < 2:
        return 1.0
    from scipy.stats import kendalltau

    where = {d: i for i, d in enumerate(b)}
    tau, _ = kendalltau(range(len(a)), [where[d] for d in a])
    return float(tau)


def _score_gap(ra: Mapping[str, Any], rb: Mapping[str, Any], n: int) -> float | None:
    sa, sb = ra.get("scores"), rb.get("scores")
    if not sa or not sb or len(sa) < n or len(sb) < n:
        return None
    by_doc = dict(zip(rb["ranking"][:n], sb[:n], strict=True))
    gaps = [abs(float(s) - float(by_doc[d])) for d, s in zip(ra["ranking"][:n], sa[:n], strict=True)]
    return max(gaps) if gaps and all(math.isfinite(g) for g in gaps) else None


def compare_results(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    pairs: Sequence[tuple[str, str]] | None = None,
    depth: int | None = None,
) -> list[dict[str, Any]]:
    """One row per method pair: how the rankings of ``a``'s method and ``b``'s agree.

    Args:
        a, b: two results dicts (:func:`load_results`).
        pairs: (label in ``a``, label in ``b``); default: every method label the two share.
        depth: how many leading documents of each ranking were reranked; default: the depth
            recorded in ``a``'s configuration.

    Returns:
        Rows with ``a``, ``b`` (labels), ``queries`` (ran by both), ``identical``, ``top10_identical``,
        ``top5_identical`` (query counts), ``kendall_tau`` (mean over queries) and
        ``max_score_gap`` (over queries where both scored the same documents; None otherwise).

    Raises:
        ValueError: a label that is not a method of its run, two runs of other depths, or a
            query whose reranked documents differ between the runs (not the same candidates).
    """
    depth_a, depth_b = a.get("config", {}).get("depth"), b.get("config", {}).get("depth")
    if depth is None:
        if depth_a != depth_b:
            raise ValueError(f"the runs reranked different depths ({depth_a} and {depth_b}); pass depth=")
        depth = depth_a
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"depth must be a positive int, got {depth!r}")
    if pairs is None:
        pairs = [(m, m) for m in _methods(a) if m in set(_methods(b))]
    rows = []
    for la, lb in pairs:
        for label, data, side in ((la, a, "first"), (lb, b, "second")):
            if label not in _methods(data):
                raise ValueError(f"{label!r} is not a method of the {side} run (it has {_methods(data)})")
        ra, rb = a["methods"][la]["records"], b["methods"][lb]["records"]
        common = [q for q in ra if q in rb]
        identical = top10 = top5 = 0
        taus: list[float] = []
        gaps: list[float] = []
        for qid in common:
            x, y = ra[qid]["ranking"][:depth], rb[qid]["ranking"][:depth]
            if sorted(x) != sorted(y):
                raise ValueError(f"query {qid!r}: {la!r} and {lb!r} reranked different documents")
            identical += x == y
            top10 += x[:10] == y[:10]
            top5 += x[:5] == y[:5]
            taus.append(_kendall_tau(x, y))
            gap = _score_gap(ra[qid], rb[qid], len(x))
            if gap is not None:
                gaps.append(gap)
        rows.append({
            "a": la, "b": lb, "queries": len(common), "identical": identical, "top10_identical": top10,
            "top5_identical": top5, "kendall_tau": statistics.fmean(taus) if taus else None,
            "max_score_gap": max(gaps) if gaps else None,
        })
    return rows


def render_comparison(rows: Sequence[Mapping[str, Any]], depth: int | None = None) -> str:
    """The rows of :func:`compare_results` as a Markdown table."""
    header = ["first run", "second run", "queries", f"identical top-{depth or 'depth'}", "identical top-10",
              "identical top-5", "mean Kendall tau", "largest score gap"]
    body = [[r["a"], r["b"], r["queries"], r["identical"], r["top10_identical"], r["top5_identical"],
             "—" if r["kendall_tau"] is None else f"{r['kendall_tau']:.3f}",
             "—" if r["max_score_gap"] is None else f"{r['max_score_gap']:.3g}"] for r in rows]
    return markdown_table(header, body)
