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
    report,
    run,
)
from rerank_plugins.evaluation.loaders import Context, MultiHopExample
from rerank_plugins.testing import KeywordReranker
from rerank_plugins.types import Hit


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
    written = (tmp_path / "results.md").read_text()
    assert written == report(data) and "| reranked | 1 | dense+rerank |" in written
    assert "Fallback rate 0.000, mean sub-questions 2.00 over 2 decomposed questions." in written
    assert f"Machine: {data['machine']['cpu']}, " in written
    assert saved["machine"]["cpu_flags"] == data["machine"]["cpu_flags"]
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


class _ListwiseFake:
    """A list-dependent reranker (not per-document): reverses each list it is given, records calls."""

    name = "reverse-fake"
    per_document = False

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def rerank(self, query: str, documents: list[str], top_k: int | None = None) -> list[Hit]:
        self.calls.append(list(documents))
        n = len(documents)
        return [Hit(i, float(i)) for i in reversed(range(n))]


def test_list_dependent_reranker_gets_each_list_in_its_own_call(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    from rerank_plugins.retrieval import HashingEmbedder

    fake = _ListwiseFake()
    data = run(
        _examples(),
        embedder=HashingEmbedder(128),
        llm=Decomposer(lambda p: "1. Seine river Paris\n2. Parisii founded Paris"),
        reranker=fake,
        out=tmp_path,
        k=2,
        rerank_depth=3,
        rerank_limit=2,
    )
    assert len(fake.calls) == 4  # two questions x (dense list, pooled list), never a union
    corpus, _ = build_corpus(_examples())
    for qid, (dense_call, pool_call) in zip(("q1", "q2"), (fake.calls[0:2], fake.calls[2:4]), strict=True):
        rec = data["questions"][qid]
        assert dense_call == [corpus[i] for i in rec["dense_list"][:3]]
        assert pool_call == [corpus[i] for i in rec["pool_list"][:3]]
        assert rec["dense+rerank_list"] == list(reversed(rec["dense_list"][:3]))
        assert rec["decomp+pooled+rerank_list"] == list(reversed(rec["pool_list"][:3]))
        assert "rerank_union" not in rec


def test_per_document_reranker_scores_the_union_once(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    from rerank_plugins.retrieval import HashingEmbedder

    class CountingKeyword(KeywordReranker):
        calls = 0

        def rerank(self, query, documents, top_k=None):  # type: ignore[no-untyped-def]
            CountingKeyword.calls += 1
            return super().rerank(query, documents, top_k)

    data = run(
        _examples(),
        embedder=HashingEmbedder(128),
        llm=Decomposer(lambda p: "1. Seine river Paris"),
        reranker=CountingKeyword(),
        out=tmp_path,
        k=2,
        rerank_depth=3,
        rerank_limit=2,
    )
    assert CountingKeyword.calls == 2  # one pass per question over the union of both lists
    rec = data["questions"]["q1"]
    assert rec["rerank_union"] == len(set(rec["dense_list"][:3]) | set(rec["pool_list"][:3]))
    assert sorted(rec["dense+rerank_list"]) == sorted(rec["dense_list"][:3])


def test_per_document_flag_marks_exactly_the_per_document_strategies() -> None:
    from rerank_plugins import registry

    flags = {name: registry.get_factory(name).per_document for name in registry.available()}
    assert flags == {
        "identity": True,
        "pointwise": True,
        "cross-encoder": True,
        "listwise": False,
        "pairwise": False,
        "attention": False,
    }
    assert KeywordReranker.per_document


def _write_hotpot(path: Path) -> Path:
    lines = []
    for ex in _examples():
        lines.append(json.dumps({
            "question_id": ex.qid, "question_text": ex.question, "answers_objects": [{"spans": ["a"]}],
            "contexts": [{"title": c.title, "paragraph_text": c.text, "is_supporting": c.is_supporting}
                         for c in ex.contexts],
        }))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_bench_decomposition_end_to_end(tmp_path: Path, tiny_model: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("faiss")
    from rerank_plugins.cli import main
    from rerank_plugins.retrieval import HashingEmbedder
    from rerank_plugins.retrieval import embedder as embedder_module

    monkeypatch.setitem(embedder_module._cache, embedder_module._cache_key("fake", None), HashingEmbedder(64))
    out = tmp_path / "out"
    argv = ["bench-decomposition", "--data", str(_write_hotpot(tmp_path / "hotpot.jsonl")), "--embedder", "fake",
            "--llm", str(tiny_model), "--reranker", "identity:label=id", "--k", "2", "--rerank-depth", "3",
            "--questions", "2", "--limit", "1", "--rerank-limit", "1", "--max-subquestions", "2",
            "--max-new-tokens", "4", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "results.json").read_text())
    assert data["command"].startswith("rerank-plugins bench-decomposition --data ")
    assert data["settings"]["k"] == 2 and data["settings"]["rerank_depth"] == 3
    assert data["decomposer"]["max_subquestions"] == 2
    assert "decomp+pooled" in data["questions"]["q1"] and "decomp+pooled" not in data["questions"]["q2"]
    assert (out / "results.md").read_text() in printed


def test_cli_bench_decomposition_options(tmp_path: Path, monkeypatch, capsys) -> None:
    from rerank_plugins.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench-decomposition", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--data", "--embedder", "--llm", "--reranker", "--reranker-model", "--k", "--rerank-depth",
                 "--questions", "--limit", "--rerank-limit", "--gen-batch", "--doc-max-tokens",
                 "--max-subquestions", "--max-new-tokens", "--time-budget", "--out"):  # fmt: skip
        assert flag in text
    monkeypatch.delenv("RERANK_EMBED_MODEL", raising=False)
    assert main(["bench-decomposition", "--llm", "x", "--out", str(tmp_path)]) == 1
    assert "--embedder and --llm are required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["bench-decomposition", "--reranker", "pointwise:x"])
    assert exc.value.code == 2
