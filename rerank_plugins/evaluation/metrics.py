"""IR metrics through ``ir-measures`` (trec_eval semantics); nothing is computed by hand here.

Rankings are passed as ordered lists of document ids and turned into descending scores, so
the evaluated order is exactly the given order (trec_eval would otherwise reorder equal
scores by document id).

Example:
    >>> from rerank_plugins.evaluation.metrics import evaluate
    >>> qrels = {"q1": {"d1": 1, "d2": 0}}
    >>> evaluate(qrels, {"q1": ["d2", "d1"]}, ["RR@10"]).aggregate
    {'RR@10': 0.5}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rerank_plugins.evaluation.loaders import Qrels

__all__ = ["DEFAULT_MEASURES", "Evaluation", "evaluate", "measure_names", "parse_measures"]

#: the benchmark's headline measures; ``rel`` is applied to the binary ones
DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10", "RR@10", "R@10")

_BINARY = ("RR", "R", "P", "AP", "Success", "Judged")


def _ir_measures() -> Any:
    try:
        import ir_measures
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "metrics need ir-measures: pip install 'rerank-plugins[eval]' (or pip install ir-measures)"
        ) from e
    return ir_measures


def parse_measures(names: Sequence[str], rel_level: int = 1) -> list[Any]:
    """Parse measure names (``"nDCG@10"``, ``"RR@10"``, ``"R@100"``, any ir-measures name).

    Binary measures without an explicit ``rel=`` get ``rel=rel_level`` when it is not 1
    (TREC DL passage qrels count grade >= 2 as relevant for binary measures).

    Example:
        >>> [str(m) for m in parse_measures(["nDCG@10", "RR@10"], rel_level=2)]
        ['nDCG@10', 'RR(rel=2)@10']
    """
    if isinstance(rel_level, bool) or not isinstance(rel_level, int) or rel_level < 1:
        raise ValueError(f"rel_level must be a positive int, got {rel_level!r}")
    irm = _ir_measures()
    out = []
    for name in names:
        try:
            m = irm.parse_measure(name)
        except (ValueError, NameError, SyntaxError, TypeError) as e:
            raise ValueError(f"unknown measure {name!r}: {e}") from None
        if rel_level != 1 and m.NAME in _BINARY and "rel" not in m.params:
            m = m(rel=rel_level)
        out.append(m)
    return out


def measure_names(names: Sequence[str], rel_level: int = 1) -> list[str]:
    """The canonical names ir-measures gives ``names`` (as keys of :class:`Evaluation`)."""
    return [str(m) for m in parse_measures(names, rel_level)]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Mean and per-query values, keyed by canonical measure name (``str(measure)``)."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]  # measure -> qid -> value


def evaluate(
    qrels: Qrels,
    rankings: Mapping[str, Sequence[str]],
    measures: Sequence[str] = DEFAULT_MEASURES,
    rel_level: int = 1,
) -> Evaluation:
    """Evaluate ranked lists of document ids against graded qrels.

    Queries are those of ``rankings`` (trec_eval's default: unranked judged queries do not
    count); a ranked query without judgments is an error since it would count as zero in
    some tools and be dropped in others.

    Args:
        qrels: query id -> document id -> grade.
        rankings: query id -> document ids, best first (non-empty, no duplicates).
        measures: ir-measures names.
        rel_level: minimum grade counted relevant by binary measures (see :func:`parse_measures`).

    Returns:
        An :class:`Evaluation`; per-query values cover every ranked query.

    Example:
        >>> ev = evaluate({"a": {"x": 2, "y": 1}}, {"a": ["y", "x"]}, ["nDCG@10"])
        >>> round(ev.aggregate["nDCG@10"], 4)
        0.8597
    """
    irm = _ir_measures()
    parsed = parse_measures(measures, rel_level)
    unjudged = [q for q in rankings if q not in qrels]
    if unjudged:
        raise ValueError(f"rankings has {len(unjudged)} queries without qrels (first: {unjudged[0]!r})")
    run: list[Any] = []
    for qid, docs in rankings.items():
        if not docs:
            raise ValueError(f"ranking of query {qid!r} is empty")
        if len(set(docs)) != len(docs):
            raise ValueError(f"ranking of query {qid!r} lists a document twice")
        n = len(docs)
        run.extend(irm.ScoredDoc(qid, d, float(n - i)) for i, d in enumerate(docs))
    qrel_list = [irm.Qrel(q, d, int(g)) for q, docs in qrels.items() if q in rankings for d, g in docs.items()]
    names = [str(m) for m in parsed]
    per_query: dict[str, dict[str, float]] = {name: {} for name in names}
    for metric in irm.iter_calc(parsed, qrel_list, run):
        per_query[str(metric.measure)][metric.query_id] = float(metric.value)
    aggregate = {str(m): float(v) for m, v in irm.calc_aggregate(parsed, qrel_list, run).items()}
    return Evaluation(aggregate={name: aggregate.get(name, 0.0) for name in names}, per_query=per_query)
