"""`rerank-plugins select-heads`: every data source, --skip/--limit/--depth, the profile it writes
(tiny random model; a hashing embedder stands in for --dense)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerank_plugins.cli import main
from rerank_plugins.rerankers.heads import HeadProfile

PARAGRAPHS = [
    ("France", "Paris is the capital of France.", True),
    ("Fox", "The quick brown fox jumps over the lazy dog.", False),
    ("Germany", "Berlin is in Germany.", True),
]


def write_multihop(tmp_path: Path, n: int = 4) -> Path:
    path = tmp_path / "hotpot.jsonl"
    lines = []
    for i in range(n):
        contexts = [{"title": t, "paragraph_text": p, "is_supporting": s and i != 3} for t, p, s in PARAGRAPHS]
        lines.append(json.dumps({"question_id": f"h{i}", "question_text": f"question {i} about the capital",
                                 "answers_objects": [{"spans": ["Paris"]}], "contexts": contexts}))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def select(tmp_path: Path, tiny_model: Path, *args: str) -> tuple[int, HeadProfile | None]:
    out = tmp_path / "profile.json"
    code = main(["select-heads", "--model", str(tiny_model), "--no-progress", "--out", str(out), *args])
    return code, HeadProfile.load(out) if out.exists() else None


def test_multihop_skip_limit_and_the_profile(tmp_path: Path, tiny_model: Path, capsys) -> None:
    code, profile = select(tmp_path, tiny_model, "--multihop", str(write_multihop(tmp_path)), "--skip", "1",
                           "--limit", "3", "--n-heads", "3")  # fmt: skip
    assert code == 0 and profile is not None
    data = profile.selection["data"]
    assert profile.selection["qids"] == ["h1", "h2"]  # h3 has no supporting paragraph: left out
    assert (profile.selection["queries"], profile.selection["queries_without_relevant"]) == (2, 1)
    assert (data["skip"], data["limit"], data["depth"], data["first_stage"]) == (1, 3, 20, "the file's candidate order")
    assert len(profile.heads) == 3 and profile.selection["command"].startswith("rerank-plugins select-heads")
    printed = capsys.readouterr().out
    assert "2 queries (1 without a relevant candidate left out)" in printed and "wrote" in printed


def test_candidates_with_qrels_and_depth(tmp_path: Path, tiny_model: Path) -> None:
    hits = [{"content": p, "docid": f"d{j}", "qid": "q1", "score": 3.0 - j} for j, (_, p, _) in enumerate(PARAGRAPHS)]
    cand = tmp_path / "cand.jsonl"
    unjudged = {"query": "unjudged", "qid": "q9", "hits": [{**hits[0], "qid": "q9"}]}
    cand.write_text(json.dumps({"query": "capital of France", "hits": hits}) + "\n" + json.dumps(unjudged) + "\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q1 0 d2 2\nq1 0 d0 0\n")
    code, profile = select(tmp_path, tiny_model, "--candidates", str(cand), "--qrels", str(qrels), "--depth", "3",
                           "--metric", "rank", "--rel-level", "2", "--prompt", "qa")  # fmt: skip
    assert code == 0 and profile is not None
    sel = profile.selection
    assert sel["qids"] == ["q1"] and sel["metric"] == "rank" and sel["prompt"] == "qa"
    assert len(profile.heads) == 8
    # d2 (grade 2) is the third candidate: cut to --depth 2, no candidate is relevant
    code, _ = select(tmp_path, tiny_model, "--candidates", str(cand), "--qrels", str(qrels), "--depth", "2",
                     "--rel-level", "2")  # fmt: skip
    assert code == 1


@pytest.fixture
def fake_embedder(monkeypatch: pytest.MonkeyPatch, requires_faiss: None) -> str:
    from rerank_plugins.retrieval import HashingEmbedder
    from rerank_plugins.retrieval import embedder as embedder_module

    monkeypatch.setitem(embedder_module._cache, embedder_module._cache_key("fake", None), HashingEmbedder(64))
    return "fake"


def test_beir_with_a_dense_first_stage(tmp_path: Path, tiny_model: Path, fake_embedder: str) -> None:
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": t, "text": p}) + "\n" for i, (t, p, _) in enumerate(PARAGRAPHS))
    )
    (beir / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "capital of France"}) + "\n" + json.dumps({"_id": "q2", "text": "fox"}) + "\n"
    )
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\nq2\td1\t1\n")
    run = tmp_path / "dense.run"
    code, profile = select(tmp_path, tiny_model, "--beir", str(beir), "--dense", fake_embedder, "--depth", "2",
                           "--limit", "1", "--save-run", str(run), "--n-heads", "2")  # fmt: skip
    assert code == 0 and profile is not None
    data = profile.selection["data"]
    assert (data["dataset"], data["split"], profile.selection["qids"]) == ("beir-train", "train", ["q1"])
    assert data["first_stage"].startswith("dense fake")
    lines = run.read_text().splitlines()
    assert len(lines) == 2 and all(line.startswith("q1 Q0 ") for line in lines)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--beir", "x"], "--beir needs --run or --dense"),
        (["--multihop", "x", "--dense", "m"], "--dense goes with --beir"),
        (["--multihop", "x", "--save-run", "r"], "--save-run goes with --dense"),
    ],
)
def test_argument_errors(tmp_path: Path, tiny_model: Path, capsys, args: list[str], message: str) -> None:
    code, _ = select(tmp_path, tiny_model, *args)
    assert code == 1 and message in capsys.readouterr().err


def test_pooling_two_selections_is_selecting_on_their_union(tmp_path: Path, tiny_model: Path, capsys) -> None:
    hotpot = str(write_multihop(tmp_path))
    profiles = {}
    for name, skip, limit in (("first", "0", "2"), ("second", "2", "1"), ("union", "0", "3")):
        code, profiles[name] = select(tmp_path / name, tiny_model, "--multihop", hotpot, "--skip", skip,
                                      "--limit", limit, "--n-heads", "5")  # fmt: skip
        assert code == 0
    pooled_path = tmp_path / "pooled.json"
    sources = [str(tmp_path / n / "profile.json") for n in ("first", "second")]
    assert main(["pool-heads", *sources, "--n-heads", "5", "--out", str(pooled_path)]) == 0
    pooled, union = HeadProfile.load(pooled_path), profiles["union"]
    assert pooled.pairs() == union.pairs()
    assert pooled.all_scores is not None and union.all_scores is not None
    assert max(abs(a - b) for ra, rb in zip(pooled.all_scores, union.all_scores, strict=True)
               for a, b in zip(ra, rb, strict=True)) < 2e-4  # fmt: skip
    sel = pooled.selection
    assert sel["queries"] == 3 and [s["qids"] for s in sel["sources"]] == [["h0", "h1"], ["h2"]]
    assert sel["prompt"] == "retrieval" and sel["command"].startswith("rerank-plugins pool-heads")
    assert abs(sel["all_heads_score"] - union.selection["all_heads_score"]) < 2e-4
    assert "3 queries from 2 selections" in capsys.readouterr().out


def test_pooling_refuses_what_does_not_pool(tmp_path: Path, tiny_model: Path, capsys) -> None:
    hotpot = str(write_multihop(tmp_path))
    for name, prompt in (("a", "retrieval"), ("b", "qa")):
        assert select(tmp_path / name, tiny_model, "--multihop", hotpot, "--prompt", prompt)[0] == 0
    a, b = str(tmp_path / "a" / "profile.json"), str(tmp_path / "b" / "profile.json")
    out = str(tmp_path / "pooled.json")
    assert main(["pool-heads", a, b, "--out", out]) == 1
    assert "prompt 'qa' differs" in capsys.readouterr().err
    assert main(["pool-heads", a, "--out", out]) == 1
    assert "at least two profiles" in capsys.readouterr().err
    bare = json.loads(Path(a).read_text())
    del bare["all_scores"]
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    assert main(["pool-heads", a, str(tmp_path / "bare.json"), "--out", out]) == 1
    assert "has no 'all_scores'" in capsys.readouterr().err
    other = json.loads(Path(a).read_text())
    other["model"] = {**other["model"], "config_sha256": "another"}
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["pool-heads", a, str(tmp_path / "other.json"), "--out", out]) == 1
    assert "chosen on another model" in capsys.readouterr().err
    assert not Path(out).exists()
