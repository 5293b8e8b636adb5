"""Fusion with the first stage, normalised relevance and thresholds (rerank_plugins.fusion), and each
strategy's ``relevance``: exact expectations on fakes, the tiny model for the strategies."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rerank_plugins import registry
from rerank_plugins.fusion import (
    FusedReranker,
    FusionOptions,
    arank_documents,
    fuse,
    interpolate,
    min_max,
    rank_documents,
    ranks,
    reciprocal_rank_fusion,
)
from rerank_plugins.options import OptionsError
from rerank_plugins.types import BaseReranker, Call, Hit

DOCS = ["a", "b", "c", "d", "e"]
TABLE = {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.3, "e": 0.7}


class Table(BaseReranker):
    """Scores from a table; records the top_k each call passes to the strategy, and counts."""

    name = "table"

    def __init__(self, table: dict[str, float] | None = None) -> None:
        self.table = table or TABLE
        self.top_ks: list[int | None] = []

    def score(self, query: str, documents: list[str]) -> list[float]:
        return [self.table[d] for d in documents]

    def _score_call(self, queries: list[str], documents: list[list[str]], call: Call) -> list[list[float]]:
        self.top_ks.append(call.top_k)
        call.count("calls")
        return super()._score_call(queries, documents, call)


class PlainReranker:
    """A Reranker by the protocol alone (not a BaseReranker): top_k only cuts."""

    def __init__(self) -> None:
        self.top_ks: list[int | None] = []

    def rerank(self, query: str, documents: Sequence[str], top_k: int | None = None) -> list[Hit]:
        self.top_ks.append(top_k)
        return Table().rerank(query, documents, top_k)

    async def arerank(self, query: str, documents: Sequence[str], top_k: int | None = None) -> list[Hit]:
        return self.rerank(query, documents, top_k)


# ---------------------------------------------------------------------------- pure functions


def test_ranks_rrf_min_max_interpolate() -> None:
    assert ranks([0.1, 0.9, 0.5, 0.9, float("nan")]) == [4, 1, 3, 2, 5]
    assert reciprocal_rank_fusion([0.1, 0.9, 0.5], k=1) == [1 / 4 + 1 / 2, 1 / 2 + 1 / 3, 1 / 3 + 1 / 4]
    assert min_max([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5]
    assert min_max([5.0, 5.0]) == [1.0, 1.0] and min_max([]) == []
    assert min_max([float("inf"), 1.0, float("nan"), 3.0]) == [0.0, 0.0, 0.0, 1.0]
    assert interpolate([0.0, 1.0, 2.0], [3.0, 2.0, 1.0], 0.75) == [0.25, 0.5, 0.75]
    # no retrieval scores: the input order (1 .. 0) stands in for them
    assert interpolate([0.0, 2.0, 1.0], None, 0.5) == [0.5, 0.75, 0.25]
    assert interpolate([3.0], None, 0.5) == [1.0]
    with pytest.raises(ValueError, match="retrieval_scores has 1 values for 2"):
        interpolate([1.0, 2.0], [1.0], 0.5)
    scores = [0.3, -1.0, 2.0]
    assert fuse(scores) == scores and fuse(scores, FusionOptions(fusion="none")) == scores
    assert fuse(scores, FusionOptions(fusion="rrf", fusion_k=10)) == reciprocal_rank_fusion(scores, 10)


def test_weighted_rrf() -> None:
    scores = [0.1, 0.9, 0.5, 0.7]  # the reranker's order: 1, 3, 2, 0; the input order: 0, 1, 2, 3
    # weight 1: the reranker's ranking alone; weight 0: the input order alone (each at twice its share)
    assert ranks(reciprocal_rank_fusion(scores, k=60, weight=1.0)) == ranks(scores)
    assert reciprocal_rank_fusion(scores, k=1, weight=0.0) == [2 / 2, 2 / 3, 2 / 4, 2 / 5]
    assert reciprocal_rank_fusion(scores, k=1, weight=0.25) == [
        2 * (0.25 / 5 + 0.75 / 2), 2 * (0.25 / 2 + 0.75 / 3), 2 * (0.25 / 4 + 0.75 / 4), 2 * (0.25 / 3 + 0.75 / 5)
    ]
    # a lower weight moves the fused order toward the input order
    assert ranks(reciprocal_rank_fusion(scores, k=1, weight=0.25)) == [1, 2, 3, 4]
    # a higher one toward the reranker's (the input's first document still passes the reranker's third)
    assert ranks(reciprocal_rank_fusion(scores, k=1, weight=0.75)) == [3, 1, 4, 2]
    opts = FusionOptions(fusion="rrf", fusion_k=1, fusion_weight=0.25)
    assert fuse(scores, opts) == reciprocal_rank_fusion(scores, 1, 0.25)
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match="weight must be in"):
            reciprocal_rank_fusion(scores, weight=bad)
        with pytest.raises(ValueError, match="weight must be in"):
            interpolate(scores, None, weight=bad)


def test_fusion_options_are_checked() -> None:
    for bad, name in [({"fusion": "max"}, "fusion"), ({"fusion_k": 0}, "fusion_k"), ({"fusion_k": True}, "fusion_k"),
                      ({"fusion_weight": 1.5}, "fusion_weight"), ({"fusion_weight": "0.5"}, "fusion_weight")]:
        with pytest.raises(OptionsError, match=name):
            FusionOptions.build(bad)


# ---------------------------------------------------------------------------- rank_documents


def _view(out: list[Any]) -> list[tuple[int, float, float, float]]:
    return [(d.index, d.score, d.rerank_score, d.relevance) for d in out]


def test_without_fusion_the_ranking_is_rerank_s_own() -> None:
    for top_k in (None, 1, 3, 9):
        r = Table()
        hits = r.rerank("q", DOCS, top_k)
        out = rank_documents(r, "q", DOCS, top_k=top_k)
        assert [(d.index, d.score) for d in out] == [(h.index, h.score) for h in hits]
        assert all(d.rerank_score == d.score for d in out)
        assert r.top_ks == [top_k, top_k]  # the caller's top_k reaches the strategy both ways
    # relevance: the default min-max of the call's scores (all documents, not just the top_k)
    top2 = [(1, 0.9, 0.9, 1.0), (4, 0.7, 0.7, pytest.approx(0.75))]
    assert _view(rank_documents(Table(), "q", DOCS, top_k=2)) == top2


def test_threshold_drops_below_then_top_k_cuts() -> None:
    # relevance of a..e: 0, 1, 0.5, 0.25, 0.75
    out = rank_documents(Table(), "q", DOCS, score_threshold=0.5)
    assert [d.index for d in out] == [1, 4, 2]  # 0.5 itself is kept
    assert [d.index for d in rank_documents(Table(), "q", DOCS, score_threshold=0.5, top_k=2)] == [1, 4]
    assert rank_documents(Table(), "q", DOCS, score_threshold=1.0)[0].index == 1
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="score_threshold"):
            rank_documents(Table(), "q", DOCS, score_threshold=bad)  # type: ignore[arg-type]


def test_rrf_and_interpolation() -> None:
    # reranker ranks b e c d a; input order a b c d e
    out = rank_documents(Table(), "q", DOCS, fusion={"fusion": "rrf", "fusion_k": 60})
    expected = {i: 1 / (60 + r) + 1 / (60 + i + 1) for i, r in enumerate([5, 1, 3, 4, 2])}
    assert [d.index for d in out] == [1, 0, 2, 4, 3]  # a, first in the input, climbs; e, second, falls
    assert [d.score for d in out] == [expected[d.index] for d in out]
    assert [d.rerank_score for d in out] == [TABLE[DOCS[d.index]] for d in out]
    # interpolation with retrieval scores that reverse the input order
    out = rank_documents(Table(), "q", DOCS, fusion={"fusion": "interpolate", "fusion_weight": 0.5},
                         retrieval_scores=[0.0, 1.0, 2.0, 3.0, 4.0])
    want = [0.5 * a + 0.5 * b for a, b in zip([0.0, 1.0, 0.5, 0.25, 0.75], [0.0, 0.25, 0.5, 0.75, 1.0], strict=True)]
    assert [d.index for d in out] == [4, 1, 2, 3, 0] and [d.score for d in out] == sorted(want, reverse=True)
    # a missing or non-numeric retrieval score: the input order stands in for all of them
    for broken in ([0.0, None, 2.0, 3.0, 4.0], [0.0, "x", 2.0, 3.0, 4.0], [0.0, float("nan"), 2.0, 3.0, 4.0]):
        fallback = rank_documents(Table(), "q", DOCS, fusion={"fusion": "interpolate"}, retrieval_scores=broken)
        plain = rank_documents(Table(), "q", DOCS, fusion={"fusion": "interpolate"})
        assert _view(fallback) == _view(plain)
    with pytest.raises(ValueError, match="retrieval_scores has 2 values for 5"):
        rank_documents(Table(), "q", DOCS, fusion={"fusion": "interpolate"}, retrieval_scores=[1.0, 2.0])


def test_ties_keep_the_input_order() -> None:
    # reranker reverses a two-document list: RRF gives both the same score, the input order wins
    out = rank_documents(Table({"x": 0.0, "y": 1.0}), "q", ["x", "y"], fusion={"fusion": "rrf", "fusion_k": 1})
    assert [d.index for d in out] == [0, 1] and out[0].score == out[1].score


def test_a_plain_reranker_is_called_without_top_k_and_cut_here() -> None:
    plain = PlainReranker()
    out = rank_documents(plain, "q", DOCS, top_k=2)
    assert plain.top_ks == [None] and _view(out) == [(1, 0.9, 0.9, 1.0), (4, 0.7, 0.7, pytest.approx(0.75))]

    class Lossy(PlainReranker):
        def rerank(self, query: str, documents: Sequence[str], top_k: int | None = None) -> list[Hit]:
            return super().rerank(query, documents, 2)

    with pytest.raises(RuntimeError, match="2 hits for 5 documents"):
        rank_documents(Lossy(), "q", DOCS)


def test_arguments_and_empty_input() -> None:
    assert rank_documents(Table(), "q", []) == []
    with pytest.raises(ValueError, match="query"):
        rank_documents(Table(), " ", DOCS)
    with pytest.raises(ValueError, match="top_k"):
        rank_documents(Table(), "q", DOCS, top_k=0)
    with pytest.raises(OptionsError, match="fusion"):
        rank_documents(Table(), "q", DOCS, fusion={"fusion": "max"})


def test_async_parity() -> None:
    for kwargs in ({}, {"fusion": {"fusion": "rrf"}, "top_k": 3}, {"score_threshold": 0.3}):
        sync = rank_documents(Table(), "q", DOCS, **kwargs)
        assert asyncio.run(arank_documents(Table(), "q", DOCS, **kwargs)) == sync
        assert asyncio.run(arank_documents(PlainReranker(), "q", DOCS, **kwargs)) == sync


@settings(max_examples=200, deadline=None)
@given(
    scores=st.lists(st.one_of(st.floats(-5, 5), st.sampled_from([0.0, 1.0, float("nan")])), min_size=0, max_size=12),
    fusion=st.sampled_from(["none", "rrf", "interpolate"]),
    threshold=st.one_of(st.none(), st.floats(0, 1)),
    top_k=st.one_of(st.none(), st.integers(1, 14)),
    with_retrieval=st.booleans(),
)
def test_results_contract(scores: list[float], fusion: str, threshold: float | None, top_k: int | None,
                          with_retrieval: bool) -> None:
    docs = [f"d{i}" for i in range(len(scores))]
    r = Table(dict(zip(docs, scores, strict=True)))
    retrieval = [float(-i) for i in range(len(docs))] if with_retrieval else None
    out = rank_documents(r, "q", docs, top_k=top_k, fusion={"fusion": fusion}, score_threshold=threshold,
                         retrieval_scores=retrieval)
    indices = [d.index for d in out]
    assert len(set(indices)) == len(indices) and set(indices) <= set(range(len(docs)))
    assert all(0.0 <= d.relevance <= 1.0 for d in out)
    if threshold is not None:
        assert all(d.relevance >= threshold for d in out)
    kept = [i for i in range(len(docs)) if threshold is None or min_max(scores)[i] >= threshold]
    assert len(out) == min(len(kept), top_k if top_k is not None else len(kept))
    # ranked best first; equal ranking scores keep the input order
    for a, b in itertools.pairwise(out):
        if not (math.isnan(a.score) or math.isnan(b.score)):
            assert a.score > b.score or (a.score == b.score and a.index < b.index)
    if threshold is None and top_k is None:
        assert sorted(indices) == list(range(len(docs)))


# ---------------------------------------------------------------------------- FusedReranker


def test_fused_reranker() -> None:
    inner = Table()
    fused = FusedReranker(inner, fusion="rrf", fusion_k=60)
    hits, stats = fused.rerank_with_stats("q", DOCS, top_k=3)
    assert [h.index for h in hits] == [1, 0, 2] and stats == {"calls": 1.0}
    assert [h.score for h in hits] == [d.score for d in rank_documents(Table(), "q", DOCS, top_k=3,
                                                                        fusion={"fusion": "rrf"})]
    assert inner.top_ks == [3]
    assert FusedReranker(Table()).options.fusion == "rrf"  # rrf unless told otherwise
    interp = FusedReranker(Table(), fusion="interpolate")
    with_scores, _ = interp.rerank_with_stats("q", DOCS, retrieval_scores=[0.0, 1.0, 2.0, 3.0, 4.0])
    assert [h.index for h in with_scores] == [4, 1, 2, 3, 0]  # c and d tie at 0.5: input order
    assert asyncio.run(interp.arerank_with_stats("q", DOCS, retrieval_scores=[0.0, 1.0, 2.0, 3.0, 4.0]))[0] == (
        with_scores
    )
    assert [h.index for h in FusedReranker(PlainReranker()).rerank("q", DOCS)] == [1, 0, 2, 4, 3]
    assert fused.describe() == {"name": "table", "fusion": "rrf", "fusion_k": 60, "fusion_weight": 0.5}
    assert "fusion='rrf'" in repr(fused)
    with pytest.raises(ValueError, match="not both"):
        FusedReranker(Table(), options=FusionOptions(), fusion="rrf")


# ---------------------------------------------------------------------------- each strategy's relevance

QUERY = "what is the capital of France?"
TEXTS = ["Paris is the capital of France.", "The quick brown fox.", "Berlin is in Germany.", "the a an of"]


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_identity_and_keyword_relevance() -> None:
    identity = registry.create("identity")
    assert identity.relevance(identity.score("q", DOCS)) == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert identity.relevance([0.0]) == [1.0]


def test_pointwise_relevance_is_the_probability_of_yes(tiny_core: Any) -> None:
    r = registry.create("pointwise", model=tiny_core)
    scores = r.score(QUERY, TEXTS)
    assert r.relevance(scores) == pytest.approx([_sigmoid(s) for s in scores], abs=1e-12)
    assert r.per_document
    assert [d.relevance for d in rank_documents(r, QUERY, TEXTS)] == sorted(r.relevance(scores), reverse=True)


def test_listwise_relevance_is_the_first_place_probability(tiny_core: Any) -> None:
    r = registry.create("listwise", model=tiny_core, window=4)
    scores = r.score(QUERY, TEXTS)
    rel = r.relevance(scores)
    assert rel == [round(s - math.floor(s), 3) for s in scores]
    assert sum(rel) == pytest.approx(1.0, abs=0.01)  # one window: the probabilities of being first
    gen = registry.create("listwise", model=tiny_core, mode="generate", window=4, max_new_tokens=4)
    assert sorted(gen.relevance(gen.score(QUERY, TEXTS))) == [0.0, 1 / 3, 2 / 3, 1.0]


def test_pairwise_relevance(tiny_core: Any) -> None:
    allpair = registry.create("pairwise", model=tiny_core, schedule="allpair")
    scores = allpair.score(QUERY, TEXTS)
    assert allpair.relevance(scores) == [s / 3 for s in scores]
    assert sum(allpair.relevance(scores)) == pytest.approx(2.0)  # 6 comparisons, one win each, over n - 1 = 3
    heap = registry.create("pairwise", model=tiny_core, schedule="heapsort", k=2)
    assert sorted(heap.relevance(heap.score(QUERY, TEXTS))) == [0.0, 1 / 3, 2 / 3, 1.0]
    assert allpair.relevance([0.0]) == [1.0]


def test_attention_relevance_is_min_max_within_the_call(tiny_core: Any) -> None:
    r = registry.create("attention", model=tiny_core, heads=None)
    scores = r.score(QUERY, TEXTS)
    assert r.relevance(scores) == min_max(scores)


def test_cross_encoder_relevance(tiny_cross_encoder: Any) -> None:
    r = registry.create("cross-encoder", model=str(tiny_cross_encoder))
    scores = r.score(QUERY, TEXTS)
    assert r.core.probabilities  # sentence-transformers' default sigmoid for one label
    assert r.relevance(scores) == scores
    r.core.probabilities = False
    try:
        assert r.relevance([0.0, 2.0]) == [0.5, pytest.approx(_sigmoid(2.0))]
    finally:
        r.core.probabilities = True


# ---------------------------------------------------------------------------- the benchmark's method specs


def test_bench_method_specs_with_fusion(tmp_path: Any) -> None:
    from rerank_plugins.evaluation.bench import build_method, parse_method_spec, run_benchmark
    from rerank_plugins.evaluation.loaders import Candidate, RerankQuery

    assert type(build_method(parse_method_spec("identity"))).__name__ == "IdentityReranker"
    assert type(build_method(parse_method_spec("identity:fusion=none"))).__name__ == "IdentityReranker"
    fused = build_method(parse_method_spec("identity:fusion=interpolate,fusion_weight=0.25"))
    assert isinstance(fused, FusedReranker) and fused.options.fusion_weight == 0.25
    with pytest.raises(ValueError, match="need fusion=rrf"):
        build_method(parse_method_spec("identity:fusion_k=10"))
    registry.register("table", lambda **kw: Table(), overwrite=True)
    # the first stage ranks a..e in that order with scores that favour e: interpolation reads them
    query = RerankQuery("q1", "q", tuple(Candidate(d, d, s) for d, s in zip(DOCS, [0.0, 1.0, 2.0, 3.0, 4.0],
                                                                             strict=True)))
    specs = [parse_method_spec("table"), parse_method_spec("table:fusion=rrf,label=rrf"),
             parse_method_spec("table:fusion=interpolate,label=interp")]
    result = run_benchmark([query], {"q1": {"b": 1}}, specs, out_dir=tmp_path, depth=5, bare_forward=False,
                           plot=False, fresh=True)
    rankings = {label: result.data["methods"][label]["records"]["q1"]["ranking"] for label in ("table", "rrf",
                                                                                               "interp")}
    assert rankings == {"table": ["b", "e", "c", "d", "a"], "rrf": ["b", "a", "c", "e", "d"],
                        "interp": ["e", "b", "c", "d", "a"]}
    assert result.data["methods"]["rrf"]["settings"]["fusion"] == "rrf"
