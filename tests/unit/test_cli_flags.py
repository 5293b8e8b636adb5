"""The command-line flags of `rerank-plugins bench`, `index` and `search`, one effect each,
checked in what the command writes (model-free where the flag allows; the tiny model otherwise)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rerank_plugins.cli import main

from .test_cli_bench import write_fixture


def bench(tmp_path: Path, *extra: str, out: str = "out") -> dict:
    cand, qrels = write_fixture(tmp_path)
    argv = ["bench", "--candidates", str(cand), "--qrels", str(qrels), "--out", str(tmp_path / out), "--no-plot",
            "--no-progress", *extra]  # fmt: skip
    assert main(argv) == 0
    return json.loads((tmp_path / out / "results.json").read_text())


def test_name_and_the_default_out_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cand, qrels = write_fixture(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--candidates", str(cand), "--qrels", str(qrels), "--name", "toy", "--no-plot"]) == 0
    data = json.loads((tmp_path / "bench-out" / "toy" / "results.json").read_text())
    assert data["config"]["dataset"] == "toy"


def test_limit_keeps_the_first_judged_queries(tmp_path: Path) -> None:
    assert bench(tmp_path, "--limit", "2")["config"]["queries"] == ["1", "2"]


def test_depth_reranks_only_the_top_candidates(tmp_path: Path) -> None:
    data = bench(tmp_path, "--depth", "1", "--method", "identity:label=id1")
    assert data["methods"]["id1"]["records"]["1"]["ranking"] == ["1-0", "1-1", "1-2", "1-3"]
    assert data["config"]["depth"] == 1


def test_fresh_recomputes_instead_of_resuming(tmp_path: Path) -> None:
    bench(tmp_path)
    path = tmp_path / "out" / "results.json"
    data = json.loads(path.read_text())
    data["methods"]["identity"]["records"]["1"]["ranking"] = ["tampered"]
    path.write_text(json.dumps(data))
    assert bench(tmp_path)["methods"]["identity"]["records"]["1"]["ranking"] == ["tampered"]  # resumed
    assert bench(tmp_path, "--fresh")["methods"]["identity"]["records"]["1"]["ranking"] == ["1-0", "1-1", "1-2", "1-3"]


def test_device_and_dtype_reach_the_methods_that_take_them(tmp_path: Path, tiny_model: Path) -> None:
    data = bench(tmp_path, "--model", str(tiny_model), "--method", "pointwise", "--device", "cpu",
                 "--dtype", "float32", "--no-bare-forward")  # fmt: skip
    assert data["methods"]["pointwise"]["options"] == {"model": str(tiny_model), "device": "cpu", "dtype": "float32"}
    assert "bare-forward" not in data["methods"]


def test_bare_forward_queries_and_doc_max_tokens(tmp_path: Path, tiny_model: Path) -> None:
    data = bench(tmp_path, "--model", str(tiny_model), "--method", "pointwise", "--bare-forward-queries", "1",
                 "--doc-max-tokens", "2")  # fmt: skip
    bare = data["methods"]["bare-forward"]["records"]
    assert sorted(bare) == ["1"]
    # the budget sizes the bare-forward prompt only: its four passages (all longer than two
    # tokens) are cut; the method keeps its own budget and cuts nothing
    assert (bare["1"]["truncated_documents"], bare["1"]["doc_max_tokens"]) == (4, 2)
    assert data["config"]["doc_max_tokens"] == 2
    assert all(r["truncated_documents"] == 0 for r in data["methods"]["pointwise"]["records"].values())


def test_rel_level_and_measure(tmp_path: Path) -> None:
    data = bench(tmp_path, "--rel-level", "3", "--measure", "P@1")
    assert data["config"]["rel_level"] == 3
    assert data["config"]["measures"] == ["nDCG@10", "RR@10", "R@10", "P@1"]
    header = (tmp_path / "out" / "results.md").read_text()
    assert "| nDCG@10 | RR(rel=3)@10 | R(rel=3)@10 | P(rel=3)@1 |" in header


@pytest.mark.parametrize(("flag", "level"), [([], logging.WARNING), (["-v"], logging.INFO), (["-vv"], logging.DEBUG)])
def test_verbose_sets_the_log_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag, level) -> None:
    seen: list[int] = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: seen.append(kw["level"]))
    bench(tmp_path, *flag)
    assert seen == [level]


def test_run_goes_only_with_beir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cand, qrels = write_fixture(tmp_path)
    assert main(["bench", "--candidates", str(cand), "--qrels", str(qrels), "--run", "r.txt"]) == 1
    assert "--run goes with --beir, not --candidates" in capsys.readouterr().err
    assert main(["bench", "--multihop", "m.jsonl", "--run", "r.txt"]) == 1
    assert "--run goes with --beir" in capsys.readouterr().err


def test_beir_split_and_qrels_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"doc {i}"}) + "\n" for i in range(3))
    )
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "query one"}) + "\n")
    (beir / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\n")
    run = tmp_path / "run.txt"
    run.write_text("q1 Q0 d0 1 3.0 bm25\nq1 Q0 d1 2 2.0 bm25\nq1 Q0 d2 3 1.0 bm25\n")
    base = ["bench", "--beir", str(beir), "--run", str(run), "--no-plot", "--no-progress"]
    assert main([*base, "--split", "dev", "--out", str(tmp_path / "dev")]) == 0
    dev = json.loads((tmp_path / "dev" / "results.json").read_text())
    assert dev["config"]["dataset"] == "beir-dev-run"
    assert "| first-stage | 1 | 1.0000 | 1.0000 |" in capsys.readouterr().out  # d0, relevant in dev, is first
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q1 0 d2 1\n")
    assert main([*base, "--split", "dev", "--qrels", str(qrels), "--out", str(tmp_path / "own")]) == 0
    assert "| first-stage | 1 | 0.5000 | 0.3333 |" in capsys.readouterr().out  # d2 is third: 1/log2(4), 1/3


# --------------------------------------------------------------------------- index and search


@pytest.fixture
def fake_embedder(monkeypatch: pytest.MonkeyPatch, requires_faiss: None) -> str:
    """Make the model name "fake" resolve to a hashing embedder (no weights)."""
    from rerank_plugins.retrieval import HashingEmbedder
    from rerank_plugins.retrieval import embedder as embedder_module

    monkeypatch.setitem(embedder_module._cache, embedder_module._cache_key("fake", None), HashingEmbedder(64))
    return "fake"


def test_index_jsonl_field_names_metric_and_normalize(tmp_path: Path, fake_embedder: str) -> None:
    from rerank_plugins.retrieval import FaissIndex

    src = tmp_path / "c.jsonl"
    src.write_text('{"key": "a", "head": "Whales", "body": "blue whales sing"}\n{"key": "b", "body": "red fox"}\n')
    out = tmp_path / "idx"
    argv = ["index", str(src), "--embedder", fake_embedder, "--out", str(out), "--id-field", "key",
            "--text-field", "body", "--title-field", "head", "--metric", "l2", "--no-normalize",
            "--batch-size", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    index = FaissIndex.load(out)
    assert index.ids == ["a", "b"]
    assert index.get("a").text == "Whales\nblue whales sing"
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["metric"], manifest["normalize"]) == ("l2", False)


def test_index_folder_patterns(tmp_path: Path, fake_embedder: str, capsys: pytest.CaptureFixture[str]) -> None:
    from rerank_plugins.retrieval import FaissIndex

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("text file")
    (docs / "b.rst").write_text("rst file")
    argv = ["index", str(docs), "--embedder", fake_embedder, "--out", str(tmp_path / "idx"), "--pattern", "*.rst"]
    assert main(argv) == 0
    assert FaissIndex.load(tmp_path / "idx").ids == ["b.rst"]


def test_search_k_and_embedder_override(tmp_path: Path, fake_embedder: str, capsys, monkeypatch) -> None:
    from rerank_plugins.retrieval import HashingEmbedder
    from rerank_plugins.retrieval import embedder as embedder_module

    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in {"w.txt": "blue whales sing", "f.txt": "red fox jumps", "p.txt": "paris france"}.items():
        (docs / name).write_text(text)
    assert main(["index", str(docs), "--embedder", fake_embedder, "--out", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "red fox", "-k", "2", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["rank"], x["id"]) for x in lines][:1] == [(1, "f.txt")] and len(lines) == 2
    # another query embedder of the wrong dimension is refused by name
    monkeypatch.setitem(embedder_module._cache, embedder_module._cache_key("other", None), HashingEmbedder(32))
    assert main(["search", str(tmp_path / "idx"), "red fox", "--embedder", "other"]) == 1
    assert "dimension" in capsys.readouterr().err
