"""Without the ``[eval]`` extra, the evaluation entry points fail with the exact pip command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rerank_plugins.evaluation.bench import MethodSpec, run_benchmark
from rerank_plugins.evaluation.loaders import Candidate, RerankQuery
from rerank_plugins.evaluation.metrics import evaluate

HINT = r"pip install 'rerank-plugins\[eval\]'"
QUERIES = [RerankQuery("q1", "red apple", (Candidate("a", "blue sky", 2.0), Candidate("b", "red apple", 1.0)))]
QRELS = {"q1": {"b": 1}}


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``import <module>`` raise ImportError, as when the package is not installed."""
    for name in list(sys.modules):
        if any(name == m or name.startswith(m + ".") for m in modules):
            monkeypatch.delitem(sys.modules, name)
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def test_metrics_without_ir_measures(monkeypatch: pytest.MonkeyPatch) -> None:
    hide(monkeypatch, "ir_measures")
    with pytest.raises(ImportError, match=f"metrics need ir-measures: {HINT}"):
        evaluate(QRELS, {"q1": ["b", "a"]}, ["nDCG@10"])


def test_bench_without_psutil(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hide(monkeypatch, "psutil")
    with pytest.raises(ImportError, match=f"peak memory needs psutil: {HINT}"):
        run_benchmark(QUERIES, QRELS, [MethodSpec("identity")], out_dir=tmp_path, bare_forward=False, progress=False)


def test_bench_plot_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hide(monkeypatch, "matplotlib")
    with pytest.raises(ImportError, match=f"the plot needs matplotlib: {HINT}"):
        run_benchmark(QUERIES, QRELS, [MethodSpec("identity")], out_dir=tmp_path, bare_forward=False, progress=False)
    # without the plot, the benchmark needs no matplotlib
    result = run_benchmark(
        QUERIES, QRELS, [MethodSpec("identity")], out_dir=tmp_path / "no-plot", bare_forward=False,
        progress=False, plot=False,
    )
    assert result.plot_path is None
    assert [r["label"] for r in result.summary] == ["first-stage", "identity"]
