"""The HotpotQA decomposition benchmark: measures on hand-built rankings, and a run with fakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerank_plugins.decomposition import Decomposer
from rerank_plugins.evaluation.decomposition_bench import (
    both_recall,
    build_corpus,
    paragraph_recall,
    render_markdown,
    run,
)
from rerank_plugins.evaluation.loaders import Context, MultiHopExample
from rerank_plugins.testing import KeywordReranker


def test_both_and_paragraph_recall() -> None:
    ranked = ["x", "a", "y", "b"]
    assert [both_recall(ranked, ["a", "b"], k) for k in (1, 2, 3, 4)] == [0.0, 0.0, 0.0, 1.0]
    assert [paragraph_recall(ranked, ["a", "b"], k) for k in (1, 2, 3, 4)] == [0.0, 0.5, 0.5, 1.0]
    assert paragraph_recall(ranked, [], 2) == 0.0


def _examples() -> list[MultiHopExample]:
    def ex(qid: str, q: str, sup: list[tuple[str, str]], other: list[tuple[str, str]]) -> MultiHopExample:
        ctx = [Context(t, x, True) for t, x in sup] + [Context(t, x, False) for t, x in other]
        return MultiHopExample(qid, q, ("a",), tuple(ctx))

    shared = ("Paris", "Paris is the capital of France.")
    return [
        ex(
            "q1",
            "Which river flows through the capital of France?",
            [shared, ("Seine", "The Seine flows through Paris.")],
            [("Rome", "Rome is the capital of Italy."), ("Tiber", "The Tiber flows through Rome.")],
        ),
        ex(
            "q2",
            "Who founded the city that is the capital of France?",
            [shared, ("Parisii", "The Parisii founded Paris.")],
            [("Lyon", "Lyon is a city in France.")],
        ),
    ]


def test_build_corpus_dedups_paragraphs_across_questions() -> None:
    corpus, supporting = build_corpus(_examples())
    assert corpus["p0"] == "Paris\nParis is the capital of France."
    assert len(corpus) == 6
    assert supporting == {"q1": ["p0", "p1"], "q2": ["p0", "p4"]}


def test_run_end_to_end_with_fakes(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    from rerank_plugins.retrieval import HashingEmbedder

    llm = Decomposer(lambda p: "1. Seine river Paris\n2. Parisii founded Paris")
    data = run(
        _examples(),
        embedder=HashingEmbedder(128),
        llm=llm,
        reranker=KeywordReranker(),
        out=tmp_path,
        k=2,
        rerank_depth=3,
        rerank_limit=1,
        gen_batch=1,
    )
    q1, q2 = data["questions"]["q1"], data["questions"]["q2"]
    assert set(q1) >= {"dense", "dense+rerank", "decomp+pooled", "decomp+pooled+rerank"}
    assert "dense+rerank" not in q2 and "decomp+pooled" in q2  # rerank rows only on the first question
    assert q1["decomposition"]["sub_questions"] == ["Seine river Paris", "Parisii founded Paris"]
    assert q1["decomp+pooled"]["queries"] == 3
    rows = {(s["subset"], s["row"]) for s in data["summary"]}
    assert ("reranked", "decomp+pooled+rerank") in rows and ("all", "dense") in rows
    assert ("all", "decomp+pooled") in rows  # every question was decomposed
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"] == data["summary"]
    assert "| reranked | 1 | dense+rerank |" in render_markdown(data["summary"], 3)
    # a rerun resumes: nothing is recomputed
    again = run(
        _examples(),
        embedder=HashingEmbedder(128),
        llm=Decomposer(lambda p: 1 / 0),
        reranker=None,
        out=tmp_path,
        k=2,
        rerank_depth=3,
        rerank_limit=1,
        gen_batch=1,
    )
    assert again["questions"]["q1"]["decomposition"] == q1["decomposition"]
