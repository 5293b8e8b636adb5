"""The benchmarks' shared measuring helpers: the machine record, percentiles, files, tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rerank_plugins.evaluation import injection_bench, measure
from rerank_plugins.evaluation.bench import MethodSpec, run_benchmark
from rerank_plugins.evaluation.loaders import Candidate, RerankQuery

CPUINFO = """\
processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""


def test_machine_records_the_cpu_model_and_its_bf16_flags(tmp_path: Path) -> None:
    info_file = tmp_path / "cpuinfo"
    info_file.write_text(CPUINFO)
    info = measure.machine(info_file, faiss="1.15")
    assert info["cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["cpu_flags"] == {"avx512_bf16": True, "amx_bf16": True, "amx_tile": True}
    assert info["faiss"] == "1.15"
    assert info["torch"] and info["transformers"] and info["cpus"] >= 1 and info["ram_bytes"] > 0
    assert info["cpu_capability"]  # torch.backends.cpu.get_cpu_capability(), e.g. "AVX2"
    assert "gpu" in info and isinstance(info["gpus"], int)
    json.dumps(info)  # goes into results.json as is

    (tmp_path / "plain").write_text("model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2\n")
    assert measure.machine(tmp_path / "plain")["cpu_flags"] == dict.fromkeys(measure.BF16_FLAGS, False)
    unknown = measure.machine(tmp_path / "missing")
    assert unknown["cpu_flags"] is None
    assert "bf16/AMX flags unknown" in measure.machine_summary(unknown)


def test_machine_summary_and_change_name_what_differs(tmp_path: Path) -> None:
    info_file = tmp_path / "cpuinfo"
    info_file.write_text(CPUINFO)
    amx = measure.machine(info_file)
    summary = measure.machine_summary(amx)
    assert summary.startswith("Intel(R) Xeon(R) Platinum 8480+, ")
    assert "avx512_bf16, amx_bf16, amx_tile" in summary and "GB RAM" in summary
    assert f"torch {amx['torch']}" in summary

    same_kind = {**amx, "platform": "other kernel", "ram_bytes": 1, "threads": 99}
    assert measure.machine_change(amx, same_kind) is None
    assert measure.machine_change(None, amx) is None
    other = {**amx, "cpu": "AMD EPYC", "cpu_flags": dict.fromkeys(measure.BF16_FLAGS, False), "gpu": "NVIDIA H200"}
    change = measure.machine_change(amx, other)
    assert change is not None
    assert "cpu 'Intel(R) Xeon(R) Platinum 8480+' -> 'AMD EPYC'" in change
    assert "cpu_flags" in change and "gpu None -> 'NVIDIA H200'" in change
    footer = measure.machine_footer(other, [change])
    assert footer.splitlines()[0] == f"Machine: {measure.machine_summary(other)}."
    assert footer.splitlines()[1] == f"Warning: the results were resumed over {change}"


@pytest.mark.parametrize("n", [1, 2, 5, 10, 43])
def test_percentile_is_numpys_linear_percentile(n: int) -> None:
    values = list(np.random.default_rng(n).random(n))
    for p in (0, 10, 50, 90, 100):
        assert measure.percentile(values, p) == pytest.approx(float(np.percentile(values, p)))
    with pytest.raises(ValueError, match="no values"):
        measure.percentile([], 50)
    with pytest.raises(ValueError, match="0..100"):
        measure.percentile([1.0], 101)


def test_save_json_replaces_the_file_whole_and_load_json_names_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    assert measure.load_json(path) is None
    measure.save_json(path, {"a": 1})
    measure.save_json(path, {"a": 2})
    assert measure.load_json(path) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"results.json: not valid JSON .*; use --fresh"):
        measure.load_json(path, "use --fresh")
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        measure.load_json(path)


def test_markdown_table_aligns_and_checks_its_rows() -> None:
    assert measure.markdown_table(["m", "x", "y"], [["a", 1, "b"]], align="lrl").splitlines() == [
        "| m | x | y |",
        "|---|---:|---|",
        "| a | 1 | b |",
    ]
    with pytest.raises(ValueError, match="align"):
        measure.markdown_table(["m", "x"], [], align="l")
    with pytest.raises(ValueError, match="1 cells for 2 columns"):
        measure.markdown_table(["m", "x"], [["a"]])


def test_rss_sampler_reports_a_peak_per_window() -> None:
    pytest.importorskip("psutil")
    with measure.RssSampler(interval=0.001) as sampler:
        first = sampler.take()
        block = bytearray(64 * 2**20)
        block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page
        peak = sampler.take()
        del block
    assert first > 0 and peak >= first


def test_jsonable_keeps_scalars_and_reprs_the_rest() -> None:
    assert measure.jsonable({"a": 1, "b": None, "c": [1]}) == {"a": 1, "b": None, "c": "[1]"}


QUERIES = [
    RerankQuery("q1", "red apple", (Candidate("a", "blue sky", 2.0), Candidate("b", "red apple", 1.0))),
    RerankQuery("q2", "blue sky", (Candidate("c", "blue sky", 2.0), Candidate("d", "red apple", 1.0))),
]
QRELS = {"q1": {"b": 1}, "q2": {"c": 1}}


def _other_kind(info: dict) -> dict:
    return {**info, "cpu": "Some Other CPU", "cpus": (info["cpus"] or 1) * 4}


def test_rerank_bench_records_the_machine_and_says_when_a_resume_changes_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_benchmark(QUERIES[:1], QRELS, [], out_dir=tmp_path, plot=False, bare_forward=False, progress=False)
    recorded = first.data["config"]["machine"]
    assert set(measure.BF16_FLAGS) <= set(recorded["cpu_flags"] or measure.BF16_FLAGS)
    assert f"Machine: {measure.machine_summary(recorded)}." in first.markdown
    assert "Warning" not in first.markdown

    real = measure.machine
    monkeypatch.setattr(measure, "machine", lambda: _other_kind(real()))
    again = run_benchmark(QUERIES, QRELS, [], out_dir=tmp_path, plot=False, bare_forward=False, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["machine"]["cpu"] == "Some Other CPU"
    [note] = saved["machine_notes"]
    assert f"cpu {recorded['cpu']!r} -> 'Some Other CPU'" in note
    assert f"Warning: the results were resumed over {note}" in again.markdown
    run_benchmark(QUERIES, QRELS, [], out_dir=tmp_path, plot=False, bare_forward=False, progress=False)
    assert json.loads((tmp_path / "results.json").read_text())["machine_notes"] == [note]  # said once


def test_injection_bench_records_the_machine_and_the_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = injection_bench.run(QUERIES, QRELS, [MethodSpec("identity")], tmp_path, depth=2)
    assert data["machine"]["cpus"] and not data.get("machine_notes")
    assert all("load_1min" in r for r in data["methods"]["identity"]["records"].values())
    md = (tmp_path / "results.md").read_text()
    assert "| s/query | load |" in md and f"Machine: {measure.machine_summary(data['machine'])}." in md

    real = measure.machine
    monkeypatch.setattr(measure, "machine", lambda: _other_kind(real()))
    data = injection_bench.run(QUERIES, QRELS, [MethodSpec("identity")], tmp_path, depth=2)
    assert len(data["machine_notes"]) == 1 and "Some Other CPU" in data["machine_notes"][0]
