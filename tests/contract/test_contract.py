"""The Reranker contract, run against every registered strategy (DESIGN.md, "The contract").

Exact guarantees: a permutation of input indices cut to top_k, float scores ordered best
first, empty in -> empty out, one document -> that document, ValueError naming the bad
argument, determinism, concurrent async calls and batches agreeing with single calls. The
quality floor that structure alone cannot give is in test_quality_floor.py.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerank_plugins.types import Hit, Reranker

from .strategies import build, names

DOCS = [
    "Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog.",
    "Berlin is the capital of Germany.",
    "Rank the passages by relevance.",
    "café naïve 東京 Привет ✓ 🙂",
    "",
    "France is a country in Europe; its capital city is Paris.",
]

_cache: dict[str, Reranker] = {}


@pytest.fixture(params=names())
def reranker(request) -> Reranker:
    if request.param not in _cache:
        _cache[request.param] = build(request.param)
    return _cache[request.param]


def assert_ranking(hits: list[Hit], n: int, top_k: int | None = None) -> None:
    expected_len = n if top_k is None else min(top_k, n)
    assert len(hits) == expected_len
    idx = [h.index for h in hits]
    assert len(set(idx)) == len(idx), f"duplicated indices {idx}"
    assert all(isinstance(i, int) and 0 <= i < n for i in idx)
    if top_k is None:
        assert sorted(idx) == list(range(n))
    scores = [h.score for h in hits]
    assert all(type(s) is float and math.isfinite(s) for s in scores)
    assert scores == sorted(scores, reverse=True)


def test_is_a_reranker(reranker):
    assert isinstance(reranker, Reranker)


def test_permutation(reranker):
    assert_ranking(reranker.rerank("What is the capital of France?", DOCS), len(DOCS))


def test_top_k_is_prefix_of_full_ranking(reranker):
    full = reranker.rerank("capital of France", DOCS)
    top = reranker.rerank("capital of France", DOCS, top_k=3)
    assert_ranking(top, len(DOCS), 3)
    assert top == full[:3]
    assert reranker.rerank("capital of France", DOCS, top_k=100) == full


def test_empty_documents(reranker):
    assert reranker.rerank("anything", []) == []
    assert reranker.rerank("anything", [], top_k=3) == []


def test_single_document(reranker):
    hits = reranker.rerank("capital of France", ["Paris."])
    assert [h.index for h in hits] == [0]
    assert type(hits[0].score) is float


def test_duplicate_documents_are_kept_apart(reranker):
    docs = ["same text", "other text", "same text", "same text"]
    assert_ranking(reranker.rerank("same", docs), len(docs))


def test_very_long_document(reranker):
    docs = ["short passage about Paris", "word " * 20000, "another short passage"]
    assert_ranking(reranker.rerank("Paris", docs), len(docs))


def test_deterministic(reranker):
    assert reranker.rerank("capital of France", DOCS) == reranker.rerank("capital of France", DOCS)


async def test_concurrent_async_calls_match_sync_calls(reranker):
    # several calls in flight at once (they share one core and its micro-batcher): each gets its
    # own query's ranking, as a lone synchronous call would
    calls = [("capital of France", DOCS, 4), ("lazy dog", DOCS[::-1], None), ("Berlin", DOCS[2:], 2)]
    together = await asyncio.gather(*(reranker.arerank(q, d, top_k=k) for q, d, k in calls))
    assert list(together) == [reranker.rerank(q, d, top_k=k) for q, d, k in calls]


def test_batch_parity(reranker):
    if not hasattr(reranker, "rerank_batch"):
        pytest.skip("strategy has no rerank_batch")
    queries = ["capital of France", "lazy dog"]
    docsets = [DOCS[:4], DOCS[2:]]
    batch = reranker.rerank_batch(queries, docsets, top_k=3)
    assert batch == [reranker.rerank(q, d, top_k=3) for q, d in zip(queries, docsets, strict=True)]


@pytest.mark.parametrize(
    ("query", "documents", "top_k", "match"),
    [
        ("", ["a"], None, "query"),
        ("   ", ["a"], None, "query"),
        (None, ["a"], None, "query"),
        (42, ["a"], None, "query"),
        ("q", "a single string", None, "documents"),
        ("q", None, None, "documents"),
        ("q", ["a", 3], None, r"documents\[1\]"),
        ("q", ["a", None], None, r"documents\[1\]"),
        ("q", ["a"], 0, "top_k"),
        ("q", ["a"], -2, "top_k"),
        ("q", ["a"], "3", "top_k"),
        ("q", ["a"], True, "top_k"),
        ("q", ["a"], 1.5, "top_k"),
    ],
)
def test_bad_arguments(reranker, query, documents, top_k, match):
    with pytest.raises(ValueError, match=match):
        reranker.rerank(query, documents, top_k=top_k)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    docs=st.lists(st.text(max_size=60), max_size=9),
    top_k=st.one_of(st.none(), st.integers(min_value=1, max_value=12)),
)
def test_property_always_a_permutation(reranker, docs, top_k):
    assert_ranking(reranker.rerank("capital of France?", docs, top_k=top_k), len(docs), top_k)


@pytest.mark.parametrize("fusion", ["none", "rrf", "interpolate"])
def test_fusion_relevance_and_threshold_keep_the_contract(reranker, fusion):
    """rank_documents (the adapters' path) on every strategy: the ranking without fusion is
    rerank's own; with fusion a permutation; relevance in [0, 1]; the threshold keeps a subset."""
    from rerank_plugins.fusion import rank_documents

    query = "What is the capital of France?"
    retrieval = [float(len(DOCS) - i) for i in range(len(DOCS))]
    out = rank_documents(reranker, query, DOCS, fusion={"fusion": fusion}, retrieval_scores=retrieval)
    assert_ranking([Hit(d.index, d.score) for d in out], len(DOCS))
    assert all(type(d.relevance) is float and 0.0 <= d.relevance <= 1.0 for d in out)
    if fusion == "none":
        assert [(d.index, d.score) for d in out] == [(h.index, h.score) for h in reranker.rerank(query, DOCS)]
    kept = rank_documents(reranker, query, DOCS, fusion={"fusion": fusion}, retrieval_scores=retrieval,
                          score_threshold=0.5, top_k=4)
    assert [d.index for d in kept] == [d.index for d in out if d.relevance >= 0.5][:4]
