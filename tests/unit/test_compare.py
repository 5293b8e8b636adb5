"""`rerank-plugins compare`: ranking agreement between two benchmark runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rerank_plugins.cli import main
from rerank_plugins.evaluation import compare
from rerank_plugins.evaluation.compare import compare_results, load_results, paired_quality
from rerank_plugins.evaluation.metrics import Evaluation


def run(records: dict[str, tuple[list[str], list[float]]], depth: int = 4, label: str = "m") -> dict[str, Any]:
    recs = {q: {"ranking": r, "scores": s} for q, (r, s) in records.items()}
    return {"config": {"depth": depth}, "methods": {
        "first-stage": {"kind": "baseline", "records": {}},
        label: {"kind": "method", "records": recs},
    }}


A = run({"q1": (["a", "b", "c", "d", "e"], [4, 3, 2, 1]), "q2": (["w", "x", "y", "z"], [0.4, 0.3, 0.2, 0.1]),
         "q3": (["p", "q", "r", "s"], [4, 3, 2, 1])})
B = run({"q1": (["a", "b", "c", "d", "e"], [4, 3, 2, 1.5]), "q2": (["x", "w", "y", "z"], [0.4, 0.3, 0.2, 0.1]),
         "q4": (["k", "l", "m", "n"], [1, 1, 1, 1])})


def test_counts_agreement_on_the_queries_both_ran() -> None:
    (row,) = compare_results(A, B)
    assert (row["a"], row["b"], row["queries"]) == ("m", "m", 2)  # q3 and q4 ran in one run only
    assert row["identical"] == 1 and row["top5_identical"] == 1  # q2's first two swapped
    # q1: tau 1; q2: one discordant pair of 6 gives tau 4/6
    assert row["kendall_tau"] == pytest.approx((1 + 4 / 6) / 2)
    # q1: d moved by 0.5; q2: w scored 0.4 in one run and 0.3 in the other
    assert row["max_score_gap"] == pytest.approx(0.5)


def test_only_the_reranked_depth_counts() -> None:
    a = run({"q": (["a", "b", "c", "d"], [2, 1])}, depth=2)
    b = run({"q": (["a", "b", "d", "c"], [2, 1])}, depth=2)  # below the depth: first-stage order, not compared
    assert compare_results(a, b)[0]["identical"] == 1


def test_pairs_of_other_labels_and_errors() -> None:
    other = run({"q1": (["a", "b", "c", "d"], [4, 3, 2, 1])}, label="served")
    assert compare_results(A, other, pairs=[("m", "served")])[0]["queries"] == 1
    with pytest.raises(ValueError, match="'nope' is not a method or the first stage of the second run"):
        compare_results(A, other, pairs=[("m", "nope")])
    with pytest.raises(ValueError, match="reranked different documents"):
        compare_results(A, run({"q1": (["a", "b", "c", "x"], [4, 3, 2, 1])}))
    with pytest.raises(ValueError, match="different depths"):
        compare_results(A, run({}, depth=5))


def test_command_prints_the_table_and_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text(json.dumps(A))
    (tmp_path / "b.json").write_text(json.dumps(B))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "| m | m | 2 | 1 | 1 | 1 | 0.833 | 0.5 |" in out
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "missing")]) == 1
    assert "no benchmark results at" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a benchmark results file"):
        load_results(tmp_path / "bad.json")


# one relevant document "r" per query; RR@10 is 1 / its rank
def ranked(rank: int, extra: str = "") -> list[str]:
    docs = [f"n{i}{extra}" for i in range(3)]
    return docs[: rank - 1] + ["r"] + docs[rank - 1 :]


QRELS = {q: {"r": 1} for q in ("q1", "q2", "q3", "q4")}
FIRST = run({"q1": (ranked(2), []), "q2": (ranked(1), []), "q3": (ranked(1), []), "q4": (ranked(4), []),
             "q5": (ranked(3), [])})  # fmt: skip
SECOND = run({"q1": (ranked(1), []), "q2": (ranked(1), []), "q3": (ranked(2), []), "q4": (ranked(1), []),
              "q5": (ranked(1), [])})  # fmt: skip


def test_paired_quality_counts_and_tests_query_by_query() -> None:
    (row,) = paired_quality(FIRST, SECOND, QRELS, measure="RR@10")
    # RR@10 first: 0.5, 1, 1, 0.25; second: 1, 1, 0.5, 1 (both ran q5, which has no judgments: not counted)
    assert row["queries"] == 4 and row["measure"] == "RR@10"
    assert (row["mean_a"], row["mean_b"]) == pytest.approx((0.6875, 0.875))
    assert (row["better"], row["equal"], row["worse"]) == (2, 1, 1)
    # differences 0.5, 0, -0.5, 0.75: mean 0.1875, sample sd 0.55434, t = 0.6765 on 3 degrees of freedom
    assert row["diff"] == pytest.approx(0.1875)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-0.694577, 1.069577), abs=1e-6)
    assert row["p_value"] == pytest.approx(0.547222, abs=1e-6)


def test_paired_quality_undefined_statistics_are_none() -> None:
    (same,) = paired_quality(FIRST, FIRST, QRELS, measure="RR@10")
    assert (same["better"], same["equal"], same["worse"], same["diff"]) == (0, 4, 0, 0)
    assert same["p_value"] is None and (same["ci_low"], same["ci_high"]) == (0, 0)
    one = run({"q1": (ranked(3), [])})
    (single,) = paired_quality(FIRST, one, QRELS, measure="RR@10")
    assert single["queries"] == 1 and single["ci_low"] is None and single["p_value"] is None


def test_paired_quality_a_constant_shift_has_no_p_value(monkeypatch: pytest.MonkeyPatch) -> None:
    # second = first + 0.1 on every query; in floating point the four differences are unequal in
    # their last bits, which a t-test would read as a certain difference (p near 0)
    values = {"first": [0.1, 0.2, 0.3, 0.7], "second": [0.1 + 0.1, 0.2 + 0.1, 0.3 + 0.1, 0.7 + 0.1]}
    assert len({y - x for x, y in zip(values["first"], values["second"], strict=True)}) > 1

    def fake_evaluate(qrels: Any, rankings: dict[str, list[str]], measures: Any, rel_level: int) -> Any:
        side = "second" if rankings["q1"] == ["b"] else "first"
        return Evaluation(aggregate={}, per_query={"nDCG@10": dict(zip(QRELS, values[side], strict=True))})

    monkeypatch.setattr(compare, "evaluate", fake_evaluate)
    (row,) = paired_quality(run({q: (["a"], []) for q in QRELS}), run({q: (["b"], []) for q in QRELS}), QRELS)
    assert (row["better"], row["equal"], row["worse"]) == (4, 0, 0)
    assert row["p_value"] is None and row["ci_low"] == row["ci_high"] == pytest.approx(0.1)


def test_paired_quality_uses_the_configured_queries_and_tolerance() -> None:
    a = run({"q1": (ranked(2), []), "q2": (ranked(2), [])})
    b = run({"q1": (ranked(1), []), "q2": (ranked(3), [])})
    a["config"]["queries"] = b["config"]["queries"] = ["q1"]  # q2 was dropped by a smaller --limit
    (row,) = paired_quality(a, b, QRELS, measure="RR@10")
    assert (row["queries"], row["better"]) == (1, 1)
    # RR@10 0.5 against 1: equal within a tolerance of 0.6
    assert paired_quality(a, b, QRELS, measure="RR@10", tolerance=0.6)[0]["equal"] == 1


def test_paired_quality_against_the_first_stage_and_errors() -> None:
    data = run({"q1": (ranked(2), []), "q2": (ranked(3), [])})
    data["methods"]["first-stage"]["records"] = {"q1": {"ranking": ranked(1)}, "q2": {"ranking": ranked(1)}}
    data["methods"]["bare"] = {"kind": "reference", "records": {"q1": {"seconds": 1.0}}}
    (row,) = paired_quality(data, data, QRELS, pairs=[("first-stage", "m")], measure="RR@10")
    assert (row["better"], row["worse"], row["diff"]) == (0, 2, pytest.approx(-7 / 12))
    with pytest.raises(ValueError, match="'bare' is not a method or the first stage of the second run"):
        paired_quality(data, data, QRELS, pairs=[("m", "bare")])
    with pytest.raises(ValueError, match="share no judged query"):
        paired_quality(data, data, {"other": {"r": 1}})
    with pytest.raises(ValueError, match="unknown measure"):
        paired_quality(data, data, QRELS, measure="nope@3")


def test_command_prints_paired_quality_with_judgments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.json").write_text(json.dumps(FIRST))
    (tmp_path / "b.json").write_text(json.dumps(SECOND))
    (tmp_path / "qrels.txt").write_text("".join(f"{q} 0 r 1\n" for q in QRELS))
    args = ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    assert main([*args, "--qrels", str(tmp_path / "qrels.txt"), "--measure", "RR@10"]) == 0
    out = capsys.readouterr().out
    assert "| m | m | 4 | 0.6875 | 0.8750 | +0.1875 | -0.6946 to +1.0696 | 2 / 1 / 1 | 0.547 |" in out
    assert main([*args, "--beir", str(tmp_path)]) == 1
    err = capsys.readouterr()
    assert "no qrels at" in err.err and err.out == ""  # checked before the first table is printed
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\tr\t1\n" for q in QRELS))
    assert main([*args, "--beir", str(tmp_path), "--split", "dev", "--measure", "RR@10"]) == 0
    assert "| m | m | 4 | 0.6875 | 0.8750 | +0.1875 |" in capsys.readouterr().out
    assert main([*args, "--measure", "RR@10"]) == 1
    assert "need judgments" in capsys.readouterr().err
    assert main([*args, "--qrels", str(tmp_path / "qrels.txt"), "--split", "dev"]) == 1
    assert "--split picks a BEIR folder" in capsys.readouterr().err


def test_command_takes_the_runs_rel_level(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # TREC DL counts grade 2 as relevant for binary measures: with grade-1 judgments RR@10 is 0
    first, second = json.loads(json.dumps(FIRST)), json.loads(json.dumps(SECOND))
    first["config"]["rel_level"] = second["config"]["rel_level"] = 2
    for name, data in (("a.json", first), ("b.json", second)):
        (tmp_path / name).write_text(json.dumps(data))
    (tmp_path / "qrels.txt").write_text("".join(f"{q} 0 r 1\n" for q in QRELS))
    args = ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--qrels", str(tmp_path / "qrels.txt")]
    assert main([*args, "--measure", "RR@10"]) == 0
    assert "| m | m | 4 | 0.0000 | 0.0000 | +0.0000 | +0.0000 to +0.0000 | 0 / 4 / 0 | — |" in capsys.readouterr().out
    assert main([*args, "--measure", "RR@10", "--rel-level", "1"]) == 0
    assert "| m | m | 4 | 0.6875 | 0.8750 |" in capsys.readouterr().out
    second["config"]["rel_level"] = 1
    (tmp_path / "b.json").write_text(json.dumps(second))
    assert main(args) == 1
    assert "different --rel-level ([1, 2])" in capsys.readouterr().err


def test_command_compares_a_method_with_its_first_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = run({"q1": (ranked(2), []), "q2": (ranked(3), [])})
    data["methods"]["first-stage"]["records"] = {"q1": {"ranking": ranked(1)}, "q2": {"ranking": ranked(1)}}
    (tmp_path / "r.json").write_text(json.dumps(data))
    (tmp_path / "qrels.txt").write_text("".join(f"{q} 0 r 1\n" for q in QRELS))
    r = str(tmp_path / "r.json")
    assert main(["compare", r, r, "--pair", "first-stage=m", "--qrels", str(tmp_path / "qrels.txt"),
                 "--measure", "RR@10"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "| first-stage | m | 2 | 0 | 0 | 0 | " in out  # the agreement table: no ranking kept
    assert "| first-stage | m | 2 | 1.0000 | 0.4167 | -0.5833 |" in out
