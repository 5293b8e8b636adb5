"""`rerank-plugins bench`: its help, its errors, and a run end to end with the tiny random model."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rerank_plugins.cli import SUBCOMMANDS, build_parser, main


def bench_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["bench"]


def test_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    options = [a for a in bench_parser()._actions if a.option_strings]
    assert len(options) >= 20
    for action in options:
        assert action.help and action.help.strip(), f"{action.option_strings} has no help"
        for flag in action.option_strings:
            assert flag in text, f"{flag} missing from bench --help"
    for words in ("NAME[:KEY=VALUE,...]", "label=", "bare forward", "resume", "results.json", "ndcg_vs_seconds.png"):
        assert words in text


def test_module_entry_point_lists_subcommands() -> None:
    out = subprocess.run([sys.executable, "-m", "rerank_plugins.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    flat = " ".join(out.split())
    for cmd in SUBCOMMANDS:
        assert f" {cmd.name} " in flat and cmd.help in flat


def write_fixture(root: Path) -> tuple[Path, Path]:
    rows = [
        ("1", "capital of france", ["Berlin is in Germany.", "Paris is the capital of France.", "Rome.", "Cats."]),
        ("2", "fast car", ["A slow boat.", "A fast car.", "Cars are fast.", "Tea."]),
        ("3", "green tea", ["Green tea leaves.", "Coffee beans.", "Black tea.", "Water."]),
    ]
    cand = root / "cands.jsonl"
    with cand.open("w") as f:
        for qid, query, docs in rows:
            hits = [{"content": d, "qid": qid, "docid": f"{qid}-{i}", "rank": i + 1, "score": 10.0 - i}
                    for i, d in enumerate(docs)]
            f.write(json.dumps({"query": query, "hits": hits}) + "\n")
    qrels = root / "qrels.txt"
    qrels.write_text("1 0 1-1 2\n1 0 1-0 0\n2 0 2-1 3\n2 0 2-2 1\n3 0 3-0 1\n")
    return cand, qrels


def test_bench_end_to_end_with_tiny_model(tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cand, qrels = write_fixture(tmp_path)
    out = tmp_path / "out"
    argv = ["bench", "--candidates", str(cand), "--qrels", str(qrels), "--depth", "3", "--rel-level", "2",
            "--model", str(tiny_model), "--method", "pointwise", "--method", "pointwise:doc_max_tokens=4,label=pw4",
            "--measure", "nDCG@5", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "results.json").read_text())
    assert list(data["methods"]) == ["first-stage", "identity", "pointwise", "bare-forward", "pw4"]
    assert data["config"]["queries"] == ["1", "2", "3"]
    assert data["config"]["command"].startswith("rerank-plugins bench --candidates ")
    pw = data["methods"]["pointwise"]
    assert pw["options"] == {"model": str(tiny_model)} and pw["reference"] == "bare-forward"
    for qid, rec in pw["records"].items():
        # top 3 reranked (a permutation of them), the 4th candidate stays last
        assert sorted(rec["ranking"][:3]) == [f"{qid}-{i}" for i in range(3)] and rec["ranking"][3] == f"{qid}-3"
        assert rec["forward_passes"] >= 1 and rec["prompt_tokens"] > 0 and rec["seconds"] > 0
    assert all(r["truncated_documents"] >= 1 for r in data["methods"]["pw4"]["records"].values())
    bare = data["methods"]["bare-forward"]["records"]
    assert sorted(bare) == ["1", "2", "3"] and all(r["forward_passes"] == 1 for r in bare.values())
    md = (out / "results.md").read_text()
    assert "| method | queries | nDCG@10 | RR(rel=2)@10 | R(rel=2)@10 | nDCG@5 |" in md
    assert "| pw4 (doc_max_tokens=4) | 3 |" in md and md in printed
    # first stage: qrels put a grade-2 doc at rank 2 for q1, grade 3 at rank 2 for q2, q3's relevant doc first
    first = next(line for line in md.splitlines() if line.startswith("| first-stage |"))
    assert first.split("|")[4].strip() == f"{(1 / 2 + 1 / 2 + 0) / 3:.4f}"  # RR with grade >= 2
    assert (out / "ndcg_vs_seconds.png").read_bytes()[:4] == b"\x89PNG"

    # Same command again: everything is done, records are kept as they were.
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["methods"] == data["methods"]


def test_bench_errors_exit_1_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cand, qrels = write_fixture(tmp_path)
    assert main(["bench", "--candidates", str(cand), "--no-progress", "--out", str(tmp_path / "o")]) == 1
    assert "--candidates needs --qrels" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(cand.read_text() + '{"query": "x", "hits": [{"docid": "z"}]}\n')
    assert main(["bench", "--candidates", str(bad), "--qrels", str(qrels), "--out", str(tmp_path / "o")]) == 1
    assert f"{bad}:4: hits[0] is missing 'content'" in capsys.readouterr().err
    assert main(["bench", "--beir", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "--beir needs --run" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--candidates", "c", "--qrels", "q", "--method", "x:a"], "expected key=value"),
        (["bench", "--candidates", "c", "--qrels", "q", "--depth", "0"], "expected a positive integer"),
        (["bench", "--qrels", "q"], "one of the arguments --candidates --beir --multihop is required"),
    ],
)
def test_bench_usage_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_beir_and_multihop_inputs_without_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": f"doc {i}"}) + "\n" for i in range(4)))
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "query one"}) + "\n")
    (beir / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\r\nq1\td2\t1\r\n")
    run = tmp_path / "run.txt"
    run.write_text("q1 Q0 d0 1 3.0 bm25\nq1 Q0 d1 2 2.0 bm25\nq1 Q0 d2 3 1.0 bm25\nq1 Q0 d3 4 0.5 bm25\n")
    out = tmp_path / "o1"
    assert main(["bench", "--beir", str(beir), "--run", str(run), "--depth", "2", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["dataset"] == "beir-test-run"
    assert data["methods"]["identity"]["records"]["q1"]["ranking"] == ["d0", "d1", "d2", "d3"]
    assert "| first-stage | 1 | 0.5000 | 0.3333 |" in capsys.readouterr().out  # d2 at rank 3

    hotpot = tmp_path / "hotpot.jsonl"
    hotpot.write_text(json.dumps({
        "question_id": "h1", "question_text": "who?", "answers_objects": [{"spans": ["x"]}],
        "contexts": [{"title": "A", "paragraph_text": "a", "is_supporting": False},
                     {"title": "B", "paragraph_text": "b", "is_supporting": True}],
    }) + "\n")
    out = tmp_path / "o2"
    assert main(["bench", "--multihop", str(hotpot), "--out", str(out), "--no-plot"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["methods"]["first-stage"]["records"]["h1"]["ranking"] == ["h1/0", "h1/1"]
    assert "| first-stage | 1 | 0.6309 | 0.5000 | 1.0000 |" in capsys.readouterr().out
    assert not (out / "ndcg_vs_seconds.png").exists()


def test_bench_with_a_dead_server_exits_1_naming_it(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("httpx")
    import socket

    with socket.socket() as sock:  # a port nothing listens on once the socket closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cand, qrels = write_fixture(tmp_path)
    served = f"http://127.0.0.1:{port}/v1?max_retries=0#{tiny_model}"
    argv = ["bench", "--candidates", str(cand), "--qrels", str(qrels), "--method", "pointwise", "--model", served]
    assert main([*argv, "--no-progress", "--no-plot", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rerank-plugins bench: error: ") and f"127.0.0.1:{port}" in err
    assert "Traceback" not in err
