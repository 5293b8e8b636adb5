"""How far two benchmark runs of the same queries agree, ranking by ranking.

Two runs of one method (float32 against bfloat16, in-process against a served copy, old code
against new) can reach the same nDCG@10 with different rankings, or differ in nDCG@10 through a
few near-ties. This compares the stored per-query rankings of two ``results.json`` files
(:mod:`rerank_plugins.evaluation.bench`): for each pair of methods and each query both ran,
whether the reranked top ``depth`` is identical, whether the top 10 and top 5 are, Kendall's tau
between the two orders of the reranked documents, and the largest score difference of a
document when both runs scored the same documents. With judgments, :func:`paired_quality` adds
the paired statistics of one measure over the same queries: how many queries the second run
ranks better, equally or worse, the mean difference with its 95% confidence interval, and the
two-sided p-value of a paired t-test.

Example:
    >>> a = {"config": {"depth": 3}, "methods": {"m": {"kind": "method", "records": {
    ...     "q": {"ranking": ["x", "y", "z"], "scores": [3.0, 2.0, 1.0]}}}}}
    >>> b = {"config": {"depth": 3}, "methods": {"m": {"kind": "method", "records": {
    ...     "q": {"ranking": ["x", "z", "y"], "scores": [3.0, 2.5, 2.0]}}}}}
    >>> row = compare_results(a, b)[0]
    >>> row["queries"], row["identical"], row["top5_identical"], round(row["kendall_tau"], 3)
    (1, 0, 0, 0.333)
    >>> q = paired_quality(a, b, {"q": {"y": 1}}, measure="RR@10")[0]
    >>> q["mean_a"], q["mean_b"], (q["better"], q["equal"], q["worse"])
    (0.5, 0.3333333333333333, (0, 0, 1))
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rerank_plugins.evaluation.loaders import Qrels
from rerank_plugins.evaluation.measure import load_json, markdown_table, method_records
from rerank_plugins.evaluation.metrics import evaluate, measure_names

__all__ = ["compare_results", "load_results", "paired_quality", "render_comparison", "render_paired_quality"]


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


def _rankers(data: Mapping[str, Any]) -> list[str]:
    """Labels that hold rankings: the methods and the first stage (a baseline)."""
    return [label for label, e in data["methods"].items() if e.get("kind") in ("method", "baseline")]


def _resolve_pairs(
    a: Mapping[str, Any], b: Mapping[str, Any], pairs: Sequence[tuple[str, str]] | None
) -> list[tuple[str, str]]:
    """The named pairs, checked; by default every method label the two runs share."""
    if pairs is None:
        return [(m, m) for m in _methods(a) if m in set(_methods(b))]
    for la, lb in pairs:
        for label, data, side in ((la, a, "first"), (lb, b, "second")):
            if label not in _rankers(data):
                raise ValueError(
                    f"{label!r} is not a method or the first stage of the {side} run (it has {_rankers(data)})"
                )
    return list(pairs)


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
        pairs: (label in ``a``, label in ``b``), methods or the first stage; default: every
            method label the two share.
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
    rows = []
    for la, lb in _resolve_pairs(a, b, pairs):
        ra, rb = method_records(a, la), method_records(b, lb)
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


def _mean_interval(diffs: Sequence[float], constant: bool, level: float = 0.95) -> tuple[float, float] | None:
    """Student-t confidence interval of the mean of ``diffs``: None under two values, the mean
    itself when the differences do not vary."""
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return None
    if constant:
        return mean, mean
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean - half, mean + half


def _paired_p(diffs: Sequence[float], constant: bool) -> float | None:
    """Two-sided paired t-test p-value (a one-sample test of the differences against 0); None
    where it is undefined: under two queries, or differences that do not vary."""
    if len(diffs) < 2 or constant:
        return None
    from scipy.stats import ttest_1samp

    return float(ttest_1samp(diffs, 0.0).pvalue)


def paired_quality(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    qrels: Qrels,
    pairs: Sequence[tuple[str, str]] | None = None,
    measure: str = "nDCG@10",
    rel_level: int = 1,
    tolerance: float = 1e-9,
) -> list[dict[str, Any]]:
    """One row per method pair: ``measure`` of both runs over the judged queries both ran.

    The statistics are paired by query, the way two rerankers of the same candidates should be
    compared: ``better``, ``equal`` and ``worse`` count the queries where ``b``'s method scores
    above, within ``tolerance`` of, or below ``a``'s; ``diff`` is the mean of ``b − a`` with its
    95% Student-t interval (``ci_low``, ``ci_high``) and ``p_value`` the two-sided paired t-test.
    Under two queries the interval and p-value are None; when the differences vary by no more
    than ``tolerance`` (equal runs, or one constant shift) the interval is the mean difference
    itself and the p-value None. Queries are those both runs ran among their configured queries
    (as in their reports) that have judgments.

    Args:
        a, b: two results dicts (:func:`load_results`); they may be the same run, to compare two
            of its methods or a method with its first stage (label ``first-stage``).
        qrels: the judgments the runs were measured with.
        pairs: as in :func:`compare_results` (methods or the first stage).
        measure: one ir-measures name.
        rel_level: minimum grade counted relevant by binary measures (2 for TREC DL).
        tolerance: how far apart two values may be and still count as equal.

    Raises:
        ValueError: an unknown label or measure, or a pair with no judged query in common.
    """
    (name,) = measure_names([measure], rel_level)
    rows = []
    for la, lb in _resolve_pairs(a, b, pairs):
        ra, rb = method_records(a, la), method_records(b, lb)
        common = [q for q in ra if q in rb and q in qrels]
        if not common:
            raise ValueError(f"{la!r} and {lb!r} share no judged query")
        xs = evaluate(qrels, {q: ra[q]["ranking"] for q in common}, [measure], rel_level).per_query[name]
        ys = evaluate(qrels, {q: rb[q]["ranking"] for q in common}, [measure], rel_level).per_query[name]
        x, y = [xs[q] for q in common], [ys[q] for q in common]
        diffs = [v - u for u, v in zip(x, y, strict=True)]
        constant = max(diffs) - min(diffs) <= tolerance
        interval = _mean_interval(diffs, constant)
        rows.append({
            "a": la, "b": lb, "measure": name, "queries": len(common),
            "mean_a": statistics.fmean(x), "mean_b": statistics.fmean(y), "diff": statistics.fmean(diffs),
            "better": sum(d > tolerance for d in diffs), "equal": sum(abs(d) <= tolerance for d in diffs),
            "worse": sum(d < -tolerance for d in diffs),
            "ci_low": None if interval is None else interval[0], "ci_high": None if interval is None else interval[1],
            "p_value": _paired_p(diffs, constant),
        })
    return rows


def render_paired_quality(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of :func:`paired_quality` as a Markdown table (the second run against the first)."""
    measure = rows[0]["measure"] if rows else "measure"

    def num(v: float | None, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    header = ["first run", "second run", "queries", f"{measure} first", f"{measure} second", "second − first",
              "95% interval", "better / equal / worse", "paired t p"]
    body = [[r["a"], r["b"], r["queries"], f"{r['mean_a']:.4f}", f"{r['mean_b']:.4f}", f"{r['diff']:+.4f}",
             "—" if r["ci_low"] is None else f"{r['ci_low']:+.4f} to {r['ci_high']:+.4f}",
             f"{r['better']} / {r['equal']} / {r['worse']}", num(r["p_value"], ".3g")] for r in rows]
    return markdown_table(header, body)
