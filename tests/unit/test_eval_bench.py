"""The benchmark runner with the identity baseline and model-free fakes (a word-counting core)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from rerank_plugins import registry
from rerank_plugins.evaluation.bench import (
    BARE_FORWARD,
    MethodSpec,
    bare_forward_prompt,
    parse_method_spec,
    run_benchmark,
    with_shared_options,
)
from rerank_plugins.evaluation.loaders import Candidate, RerankQuery
from rerank_plugins.evaluation.metrics import evaluate
from rerank_plugins.scoring import CoreStats, Document, EncodedPrompt
from rerank_plugins.testing import KeywordReranker
from rerank_plugins.types import BaseReranker, Call, Hit


class WordCore:
    """A model-free stand-in for the scoring core: one token per word, counted like the real one."""

    name = "word-core"

    def __init__(self, max_length: int = 10_000) -> None:
        self.max_length = max_length
        self.stats = CoreStats()
        self.forwarded: list[list[int]] = []

    def encode_chat(self, parts: Sequence[Any], *, doc_max_tokens: int | None = None, **_: Any) -> EncodedPrompt:
        ids: list[int] = [0]  # the "chat template"
        spans, truncated = [], 0
        for part in parts:
            words = (part.text if isinstance(part, Document) else part).split()
            if isinstance(part, Document):
                if doc_max_tokens is not None and len(words) > doc_max_tokens:
                    words, truncated = words[:doc_max_tokens], truncated + 1
                spans.append((len(ids), len(ids) + len(words)))
            ids += [len(w) for w in words]
        return EncodedPrompt(ids, spans, truncated)

    def forward(self, input_ids: Sequence[int]) -> None:
        self.forwarded.append(list(input_ids))
        self.stats.add(forward_passes=1, prompt_tokens=len(input_ids))


class CountingReranker(BaseReranker):
    """Keyword scores; one 'forward pass' per document of (query words + document words) tokens."""

    name = "counting"
    calls = 0
    interrupt_on: str | None = None

    def __init__(self, core: WordCore, bonus: int = 0) -> None:
        self.core = core

    def _score_call(self, queries: list[str], documents: list[list[str]], call: Call) -> list[list[float]]:
        call.stats.update({"comparisons": len(documents[0]) - 1, "label": "not a number", "flag": True})  # type: ignore[dict-item]
        return self.score_batch(queries, documents)

    def score(self, query: str, documents: list[str]) -> list[float]:
        if CountingReranker.interrupt_on is not None and CountingReranker.interrupt_on in query:
            raise KeyboardInterrupt
        CountingReranker.calls += 1
        for d in documents:
            self.core.stats.add(forward_passes=1, prompt_tokens=len(query.split()) + len(d.split()))
        return KeywordReranker().score(query, documents)


CORE = WordCore()


@pytest.fixture(autouse=True)
def _register() -> None:
    registry.register("test-counting", lambda **kw: CountingReranker(CORE, **kw), overwrite=True)
    CountingReranker.calls = 0
    CountingReranker.interrupt_on = None


def cand(docid: str, text: str, score: float) -> Candidate:
    return Candidate(docid, text, score)


QUERIES = [
    RerankQuery("q1", "red apple", (cand("a", "blue sky", 3), cand("b", "red apple pie", 2), cand("c", "apple", 1))),
    RerankQuery("q2", "green tea", (cand("d", "green tea leaves", 3), cand("e", "coffee", 2), cand("f", "tea", 1))),
    RerankQuery("q3", "fast car", (cand("g", "slow boat", 3), cand("h", "a fast car", 2), cand("i", "car", 1))),
    RerankQuery("q4", "no judgments", (cand("j", "x", 1),)),
]
QRELS = {"q1": {"b": 2, "c": 1}, "q2": {"d": 1}, "q3": {"h": 1, "i": 0}}


def test_parse_method_spec() -> None:
    assert parse_method_spec("pointwise") == MethodSpec("pointwise", {}, "pointwise")
    spec = parse_method_spec("listwise:mode=first, window=20,stride=2.5,calibrate=False,x=none,s='7',label=w20")
    assert spec == MethodSpec(
        "listwise", {"mode": "first", "window": 20, "stride": 2.5, "calibrate": False, "x": None, "s": "7"}, "w20"
    )
    assert parse_method_spec("attention:model=/m/q:1").options == {"model": "/m/q:1"}
    for bad, msg in [("", "non-empty"), (":a=1", "no name"), ("x:a", "expected key=value"),
                     ("x:a=1,a=2", "given twice"), ("x:1a=1", "expected key=value")]:
        with pytest.raises(ValueError, match=msg):
            parse_method_spec(bad)


def test_shared_options_go_where_the_factory_takes_them() -> None:
    shared = {"model": "/m", "device": "cpu", "dtype": None}
    assert with_shared_options(MethodSpec("identity"), shared).options == {}
    assert with_shared_options(MethodSpec("pointwise"), shared).options == {"model": "/m", "device": "cpu"}
    own = with_shared_options(MethodSpec("pointwise", {"model": "/other"}, "pw2"), shared)
    assert own == MethodSpec("pointwise", {"model": "/other", "device": "cpu"}, "pw2")


def test_run_measures_baselines_method_and_bare_forward(tmp_path: Path) -> None:
    result = run_benchmark(QUERIES, QRELS, [MethodSpec("test-counting")], out_dir=tmp_path, depth=2,
                           dataset="toy", measures=["nDCG@10", "RR@10"], progress=False)
    rows = {r["label"]: r for r in result.summary}
    assert [r["label"] for r in result.summary] == ["first-stage", "identity", "test-counting", BARE_FORWARD]
    methods = json.loads(result.results_path.read_text())["methods"]
    # q4 has no judgments: skipped. Only the top 2 are reranked, the rest stay in first-stage order.
    recs = methods["test-counting"]["records"]
    assert {q: r["ranking"] for q, r in recs.items()} == {
        "q1": ["b", "a", "c"], "q2": ["d", "e", "f"], "q3": ["h", "g", "i"]
    }
    assert methods["first-stage"]["records"]["q1"]["ranking"] == ["a", "b", "c"]
    assert methods["identity"]["records"]["q3"]["ranking"] == ["g", "h", "i"]
    # Counters are deltas of core.stats around each rerank call (the warm-up call is not counted).
    assert [recs[q]["forward_passes"] for q in ("q1", "q2", "q3")] == [2, 2, 2]
    assert recs["q1"]["prompt_tokens"] == (2 + 2) + (2 + 3)
    assert recs["q1"]["extra"] == {"comparisons": 1.0}  # non-numbers and bools are dropped
    assert rows["test-counting"]["extra_per_q"] == {"comparisons": 1.0}
    assert CountingReranker.calls == 3 + 1  # 3 queries + warm-up
    # Quality comes from ir-measures over the stored rankings.
    expected = evaluate(QRELS, {q: r["ranking"] for q, r in recs.items()}, ["nDCG@10"]).aggregate["nDCG@10"]
    assert rows["test-counting"]["metrics"]["nDCG@10"] == pytest.approx(expected)
    assert rows["first-stage"]["metrics"]["RR@10"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert rows["test-counting"]["metrics"]["RR@10"] == pytest.approx(1.0)
    # Bare forward: one pass per query over the query and both reranked passages.
    bare = methods[BARE_FORWARD]["records"]
    # WordCore counts one template token plus one per word: "Query: red apple / Passages:" (4),
    # "[1] blue sky" (3), "[2] red apple pie" (4)
    assert bare["q1"]["prompt_tokens"] == 1 + 4 + 3 + 4 and bare["q1"]["forward_passes"] == 1
    assert methods["test-counting"]["reference"] == BARE_FORWARD
    ratio = rows["test-counting"]["median_s"] / rows[BARE_FORWARD]["median_s"]
    assert rows["test-counting"]["x_bare"] == pytest.approx(ratio)
    assert rows["identity"].get("x_bare") is None and rows["first-stage"].get("median_s") is None
    assert all(r["rss_peak_bytes"] > 0 for r in recs.values())
    # Reports.
    assert result.markdown.splitlines()[2].startswith("| method | queries | nDCG@10 | RR@10 | median s/q |")
    assert "| test-counting | 3 |" in result.markdown
    assert result.markdown_path.read_text() == result.markdown
    assert result.plot_path is not None and result.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_limit_and_bare_forward_subset(tmp_path: Path) -> None:
    result = run_benchmark(QUERIES, QRELS, [MethodSpec("test-counting")], out_dir=tmp_path, depth=3, limit=2,
                           bare_forward_queries=1, plot=False, progress=False)
    methods = result.data["methods"]
    assert sorted(methods["test-counting"]["records"]) == ["q1", "q2"]
    assert sorted(methods[BARE_FORWARD]["records"]) == ["q1"]
    assert result.plot_path is None


def test_skip_leaves_out_the_first_judged_queries(tmp_path: Path) -> None:
    result = run_benchmark(QUERIES, QRELS, [MethodSpec("test-counting")], out_dir=tmp_path, depth=3, skip=1, limit=1,
                           bare_forward=False, plot=False, progress=False)
    assert sorted(result.data["methods"]["test-counting"]["records"]) == ["q2"]
    assert result.data["config"]["skip"] == 1 and result.data["config"]["queries"] == ["q2"]
    assert [row["queries"] for row in result.summary] == [1, 1, 1]
    # past the judged queries nothing is left: a clear error, not an empty report
    with pytest.raises(ValueError, match="no judged query"):
        run_benchmark(QUERIES, QRELS, [], out_dir=tmp_path, skip=3, plot=False, progress=False)
    for bad in (-1, True, 1.0):
        with pytest.raises(ValueError, match="skip must be a non-negative int"):
            run_benchmark(QUERIES, QRELS, [], out_dir=tmp_path, skip=bad, plot=False, progress=False)  # type: ignore[arg-type]


def test_bare_forward_budget_shrinks_to_fit_context() -> None:
    core = WordCore(max_length=12)
    ids, truncated, budget = bare_forward_prompt(core, "q", ["one two three four five", "six seven eight nine"], 512)
    assert len(ids) <= 12 and truncated == 2 and budget is not None and budget < 4
    with pytest.raises(ValueError, match="cannot fit the model's context of 3"):
        bare_forward_prompt(WordCore(max_length=3), "q", ["a b"], 512)


def test_interrupt_then_resume_skips_done_queries(tmp_path: Path) -> None:
    spec = MethodSpec("test-counting", {"bonus": 1}, "counting-b1")
    CountingReranker.interrupt_on = "fast car"  # q3
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(QUERIES, QRELS, [spec], out_dir=tmp_path, depth=2, progress=False, plot=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert sorted(saved["methods"]["counting-b1"]["records"]) == ["q1", "q2"]
    CountingReranker.interrupt_on = None
    CountingReranker.calls = 0
    result = run_benchmark(QUERIES, QRELS, [spec], out_dir=tmp_path, depth=2, progress=False, plot=False)
    recs = result.data["methods"]["counting-b1"]["records"]
    assert CountingReranker.calls == 1 + 1  # q3 + warm-up
    assert sorted(recs) == ["q1", "q2", "q3"]
    assert recs["q1"] == saved["methods"]["counting-b1"]["records"]["q1"]
    # A third run has nothing left to do: no warm-up, no calls.
    CountingReranker.calls = 0
    run_benchmark(QUERIES, QRELS, [spec], out_dir=tmp_path, depth=2, progress=False, plot=False)
    assert CountingReranker.calls == 0


def test_resume_refuses_a_different_configuration(tmp_path: Path) -> None:
    spec = MethodSpec("test-counting", {"bonus": 1}, "c")
    run_benchmark(QUERIES, QRELS, [spec], out_dir=tmp_path, depth=2, progress=False, plot=False)
    with pytest.raises(ValueError, match="run with depth 2, not 3"):
        run_benchmark(QUERIES, QRELS, [spec], out_dir=tmp_path, depth=3, progress=False, plot=False)
    with pytest.raises(ValueError, match="label 'c' was run as test-counting"):
        run_benchmark(QUERIES, QRELS, [MethodSpec("test-counting", {"bonus": 2}, "c")], out_dir=tmp_path, depth=2,
                      progress=False, plot=False)
    with pytest.raises(ValueError, match="holds results for dataset"):
        run_benchmark(QUERIES, QRELS, [spec], out_dir=tmp_path, depth=2, dataset="other", progress=False, plot=False)
    # fresh=True starts over.
    result = run_benchmark(QUERIES, QRELS, [], out_dir=tmp_path, depth=3, fresh=True, progress=False, plot=False)
    assert sorted(result.data["methods"]) == ["first-stage", "identity"]


def test_labels_must_be_unique_and_not_reserved(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="two methods share the label 'test-counting'"):
        run_benchmark(QUERIES, QRELS, [MethodSpec("test-counting"), MethodSpec("test-counting", {"bonus": 1})],
                      out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="label 'first-stage' is reserved"):
        run_benchmark(QUERIES, QRELS, [MethodSpec("identity", {}, "first-stage")], out_dir=tmp_path, progress=False)
    # Asking for identity again is the baseline itself, not a second row.
    result = run_benchmark(QUERIES, QRELS, [MethodSpec("identity")], out_dir=tmp_path, plot=False, progress=False)
    assert [r["label"] for r in result.summary] == ["first-stage", "identity"]


class Duplicating:
    """Violates the contract: returns one document twice."""

    def rerank(self, query: str, documents: Sequence[str], top_k: int | None = None) -> list[Hit]:
        return [Hit(0, 1.0)] * len(documents)


def test_contract_violation_is_reported(tmp_path: Path) -> None:
    registry.register("test-duplicating", Duplicating, overwrite=True)
    with pytest.raises(RuntimeError, match=r"returned indices \[0, 0\] for 2 documents of query 'q1'"):
        run_benchmark(QUERIES, QRELS, [MethodSpec("test-duplicating")], out_dir=tmp_path, depth=2, progress=False)


def test_bad_factory_options_name_the_method(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="method 'identity-x': cannot build 'identity'"):
        run_benchmark(QUERIES, QRELS, [MethodSpec("identity", {"nope": 1}, "identity-x")], out_dir=tmp_path,
                      progress=False)


@pytest.mark.parametrize("fusion", [{"fusion": "rrf", "fusion_k": 1}, {"fusion": "interpolate", "fusion_weight": 0.3}])
def test_a_fused_row_derives_from_its_unfused_twin_as_if_run(tmp_path: Path, fusion: dict[str, Any]) -> None:
    plain, fused = MethodSpec("test-counting", {}, "c"), MethodSpec("test-counting", fusion, "c-fused")
    # listed first, the fused method still waits for its twin
    derived = run_benchmark(QUERIES, QRELS, [fused, plain], out_dir=tmp_path / "derived", depth=3,
                            bare_forward=False, plot=False, progress=False)
    assert CountingReranker.calls == 3 + 1  # the twin's queries and its warm-up: the fused row ran nothing
    ran = run_benchmark(QUERIES, QRELS, [fused], out_dir=tmp_path / "ran", depth=3,
                        bare_forward=False, plot=False, progress=False)
    methods, ran_methods = derived.data["methods"], ran.data["methods"]
    rankings = {q: r["ranking"] for q, r in methods["c-fused"]["records"].items()}
    assert rankings == {q: r["ranking"] for q, r in ran_methods["c-fused"]["records"].items()}
    assert rankings != {q: r["ranking"] for q, r in methods["c"]["records"].items()}  # fusion changed something
    for qid, record in methods["c-fused"]["records"].items():
        assert record["derived"] is True
        assert record["scores"] == pytest.approx(ran_methods["c-fused"]["records"][qid]["scores"])
        assert record["seconds"] == methods["c"]["records"][qid]["seconds"]
    assert methods["c-fused"]["derived_from"] == "c"
    assert methods["c-fused"]["settings"]["fusion"] == fusion["fusion"]
    assert "c-fused from c" in derived.markdown


def test_a_fused_row_runs_when_its_twin_cannot_be_placed(tmp_path: Path) -> None:
    run_benchmark(QUERIES, QRELS, [MethodSpec("test-counting", {}, "c")], out_dir=tmp_path, depth=3,
                  bare_forward=False, plot=False, progress=False)
    path = tmp_path / "results.json"
    data = json.loads(path.read_text())
    data["methods"]["c"]["records"]["q1"]["scores"] = [1.0]  # a record cut short: its scores cannot be placed
    path.write_text(json.dumps(data))
    CountingReranker.calls = 0
    result = run_benchmark(QUERIES, QRELS, [MethodSpec("test-counting", {"fusion": "rrf"}, "c-rrf")],
                           out_dir=tmp_path, depth=3, bare_forward=False, plot=False, progress=False)
    records = result.data["methods"]["c-rrf"]["records"]
    assert CountingReranker.calls == 1 + 1  # q1 ran (and the warm-up); q2 and q3 were derived
    assert "derived" not in records["q1"] and records["q2"]["derived"] and records["q3"]["derived"]
    assert sorted(records["q1"]["ranking"]) == ["a", "b", "c"]
