"""`rerank-plugins index`, `search` and `bench-retrieval` end to end, with the hashing embedder."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("faiss")

from rerank_plugins.cli import main
from rerank_plugins.retrieval import FaissIndex, HashingEmbedder
from rerank_plugins.retrieval import embedder as embedder_module


@pytest.fixture
def fake_model(monkeypatch) -> str:
    """Make the model name "fake" resolve to a hashing embedder (no weights)."""
    monkeypatch.setitem(embedder_module._cache, embedder_module._cache_key("fake", None), HashingEmbedder(64))
    return "fake"


def test_index_folder_then_search(tmp_path, fake_model, capsys):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "fox.txt").write_text("The quick red fox jumps.", encoding="utf-8")
    (tmp_path / "docs" / "sub" / "whale.md").write_text("Blue whales sing.", encoding="utf-8")
    assert main(["index", str(tmp_path / "docs"), "--embedder", fake_model, "--out", str(tmp_path / "idx")]) == 0
    assert "indexed 2 documents" in capsys.readouterr().out
    assert len(FaissIndex.load(tmp_path / "idx")) == 2

    assert main(["search", str(tmp_path / "idx"), "blue whales", "-k", "1", "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert (line["rank"], line["id"], line["text"]) == (1, "sub/whale.md", "Blue whales sing.")


def test_index_jsonl(tmp_path, fake_model, capsys):
    src = tmp_path / "corpus.jsonl"
    src.write_text('{"_id": "a", "title": "T", "text": "alpha"}\n{"_id": "b", "text": "beta"}\n', encoding="utf-8")
    assert main(["index", str(src), "--embedder", fake_model, "--out", str(tmp_path / "idx"), "--kind", "hnsw"]) == 0
    index = FaissIndex.load(tmp_path / "idx")
    assert (index.kind, index.ids, index.get("a").text) == ("hnsw", ["a", "b"], "T\nalpha")


def test_index_errors(tmp_path, fake_model, capsys):
    assert main(["index", str(tmp_path / "missing"), "--embedder", fake_model, "--out", str(tmp_path / "o")]) == 1
    assert "no such folder or file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["index", str(tmp_path / "empty"), "--embedder", fake_model, "--out", str(tmp_path / "o")]) == 1
    assert "no documents found" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "empty"), "q"]) == 1
    assert "manifest.json is missing" in capsys.readouterr().err


def test_bench_retrieval_on_a_tiny_beir_folder(tmp_path, fake_model, capsys):
    beir = tmp_path / "tiny"
    (beir / "qrels").mkdir(parents=True)
    docs = {"d1": "blue whales are large", "d2": "paris is in france", "d3": "vector search library"}
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items()), encoding="utf-8"
    )
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "paris france"}\n{"_id": "q2", "text": "whales"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\r\nq1\td2\t1\r\nq2\td1\t1\r\n")
    run = tmp_path / "bm25.txt"
    run.write_text("q1 Q0 d1 1 2.0 bm25\nq1 Q0 d2 2 1.0 bm25\nq2 Q0 d1 1 1.0 bm25\n")
    out = tmp_path / "out"
    argv = ["bench-retrieval", "--beir", str(beir), "--embedder", fake_model, "--kind", "flat", "--kind", "hnsw",
            "--baseline-run", f"bm25={run}", "-k", "3", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in data["rows"]] == ["bm25", "dense-fake-flat", "dense-fake-hnsw"]
    assert data["rows"][0]["metrics"] == {"nDCG@10": pytest.approx(0.8154648767857288), "R@100": 1.0}
    assert data["rows"][1]["metrics"] == {"nDCG@10": 1.0, "R@100": 1.0}  # the hashing vectors share words
    assert data["command"].startswith("rerank-plugins bench-retrieval --beir")
    lines = (out / "run.dense-fake-flat.txt").read_text().splitlines()
    assert lines[0].split()[:4] == ["q1", "Q0", "d2", "1"]  # ranks 2-3 tie at score 0
    assert len(lines) == 6
    assert "| dense-fake-hnsw | IDMap2,HNSW32 | 1.0000 | 1.0000 |" in capsys.readouterr().out
    assert main([*argv[:-2], "--baseline-run", "nolabel", "--out", str(out)]) == 1
