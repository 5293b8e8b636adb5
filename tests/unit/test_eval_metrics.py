"""Metrics through ir-measures, checked against values computed by hand on a 3-query toy."""

from __future__ import annotations

import math

import pytest

from rerank_plugins.evaluation.metrics import evaluate, measure_names, parse_measures

# Graded judgments (d3 is judged non-relevant; d5, b, c, z are unjudged).
QRELS = {
    "q1": {"d1": 3, "d2": 2, "d3": 0, "d4": 1},
    "q2": {"a": 1},
    "q3": {"x": 2, "y": 2},
}
RANKINGS = {
    "q1": ["d2", "d3", "d1", "d5"],
    "q2": ["b", "c", "a"],
    "q3": ["x", "z", "y"],
}

# nDCG as trec_eval computes it: gain = grade, discount log2(rank + 1), ideal = grades sorted.
DCG = {
    "q1": 2 / math.log2(2) + 0 + 3 / math.log2(4) + 0,  # d2, d3, d1, d5
    "q2": 1 / math.log2(4),  # a at rank 3
    "q3": 2 / math.log2(2) + 2 / math.log2(4),  # x, y at ranks 1 and 3
}
IDCG = {
    "q1": 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4),
    "q2": 1.0,
    "q3": 2 / math.log2(2) + 2 / math.log2(3),
}
NDCG = {q: DCG[q] / IDCG[q] for q in QRELS}


def test_ndcg_matches_hand_computation() -> None:
    ev = evaluate(QRELS, RANKINGS, ["nDCG@10"])
    assert ev.per_query["nDCG@10"] == pytest.approx(NDCG, abs=1e-9)
    assert ev.aggregate["nDCG@10"] == pytest.approx(sum(NDCG.values()) / 3, abs=1e-9)
    # the literal values, so a formula slip in this file would show too
    assert NDCG["q1"] == pytest.approx(3.5 / 4.761859507, abs=1e-9)
    assert NDCG["q3"] == pytest.approx(3.0 / 3.261859507, abs=1e-9)


def test_ndcg_cutoff() -> None:
    # @2 drops d1 (rank 3) from q1's DCG: only d2 at rank 1 counts.
    ev = evaluate(QRELS, RANKINGS, ["nDCG@2"])
    assert ev.per_query["nDCG@2"]["q1"] == pytest.approx(2 / (3 + 2 / math.log2(3)), abs=1e-9)
    assert ev.per_query["nDCG@2"]["q2"] == 0.0


def test_rr_and_recall_with_relevance_levels() -> None:
    ev = evaluate(QRELS, RANKINGS, ["RR@10", "R@2"])
    assert ev.per_query["RR@10"] == pytest.approx({"q1": 1.0, "q2": 1 / 3, "q3": 1.0})
    assert ev.per_query["R@2"] == pytest.approx({"q1": 1 / 3, "q2": 0.0, "q3": 1 / 2})
    ev2 = evaluate(QRELS, RANKINGS, ["RR@10", "R@2"], rel_level=2)
    assert ev2.per_query["RR(rel=2)@10"] == pytest.approx({"q1": 1.0, "q2": 0.0, "q3": 1.0})
    assert ev2.per_query["R(rel=2)@2"] == pytest.approx({"q1": 1 / 2, "q2": 0.0, "q3": 1 / 2})
    assert ev2.aggregate["RR(rel=2)@10"] == pytest.approx(2 / 3)


def test_order_is_the_given_order_not_docid_order() -> None:
    # Two documents only differ by position; trec_eval would break equal scores by docid.
    qrels = {"q": {"b": 1}}
    assert evaluate(qrels, {"q": ["a", "b"]}, ["RR@10"]).aggregate["RR@10"] == 0.5
    assert evaluate(qrels, {"q": ["b", "a"]}, ["RR@10"]).aggregate["RR@10"] == 1.0


def test_measure_names() -> None:
    assert measure_names(["nDCG@10", "RR@10", "R@100", "P(rel=3)@5"], rel_level=2) == [
        "nDCG@10", "RR(rel=2)@10", "R(rel=2)@100", "P(rel=3)@5"
    ]
    assert [str(m) for m in parse_measures(["RR@10"])] == ["RR@10"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rankings": {"q9": ["a"]}}, "rankings has 1 queries without qrels"),
        ({"rankings": {"q1": ["a", "a"]}}, "ranking of query 'q1' lists a document twice"),
        ({"rankings": {"q1": []}}, "ranking of query 'q1' is empty"),
        ({"rankings": {"q1": ["a"]}, "measures": ["NotAMeasure@3"]}, "unknown measure 'NotAMeasure@3'"),
        ({"rankings": {"q1": ["a"]}, "rel_level": 0}, "rel_level must be a positive int"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(QRELS, **kwargs)
