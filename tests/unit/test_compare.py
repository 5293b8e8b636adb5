"""`rerank-plugins compare`: ranking agreement between two benchmark runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rerank_plugins.cli import main
from rerank_plugins.evaluation.compare import compare_results, load_results


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
    with pytest.raises(ValueError, match="'nope' is not a method of the second run"):
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
