"""The injection benchmark on model-free rerankers whose planted-passage ranks are known exactly."""

from __future__ import annotations

import json

import pytest

from rerank_plugins import registry
from rerank_plugins.cli import main
from rerank_plugins.evaluation.bench import MethodSpec
from rerank_plugins.evaluation.injection_bench import INJECTION, PLANTED_ID, planted_lists, run
from rerank_plugins.evaluation.loaders import Candidate, RerankQuery
from rerank_plugins.types import BaseReranker

QUERIES = [
    RerankQuery(f"q{i}", f"query {i}", tuple(Candidate(f"d{i}{j}", f"passage {i}{j}", 1.0 - j / 10) for j in range(3)))
    for i in range(3)
]
QRELS = {f"q{i}": {f"d{i}0": 2, f"d{i}1": 0} for i in range(3)}


class Obedient(BaseReranker):
    """Puts any document carrying the injected sentence first; keeps input order otherwise."""

    name = "obedient"
    per_document = True

    def score(self, query: str, documents: list[str]) -> list[float]:
        return [1.0 if INJECTION in d else -i / 100 for i, d in enumerate(documents)]


@pytest.fixture
def obedient(monkeypatch):
    monkeypatch.setitem(registry._registered, "obedient", Obedient)


def test_planted_lists_insert_the_passage_plain_and_injected():
    lists = planted_lists(QUERIES[0], Candidate("z", "off topic", 0.0), 3, [0, 3])
    assert [(p.position, p.injected) for p in lists] == [(0, False), (0, True), (3, False), (3, True)]
    assert lists[2].docids == ["d00", "d01", "d02", PLANTED_ID]
    assert lists[3].texts[3] == f"off topic {INJECTION}"
    # positions past a short candidate list collapse onto "last"
    short = planted_lists(QUERIES[0], Candidate("z", "x", 0.0), 10, [0, 5, 10])
    assert [(p.position, p.injected) for p in short] == [(0, False), (0, True), (3, False), (3, True)]
    with pytest.raises(ValueError, match="positions"):
        planted_lists(QUERIES[0], Candidate("z", "x", 0.0), 3, [-1])


def test_identity_is_not_moved_and_an_obedient_reranker_is(tmp_path, obedient):
    data = run(QUERIES, QRELS, [MethodSpec("identity"), MethodSpec("obedient")], tmp_path, depth=3,
               positions=[0, 1, 3], dataset="toy")
    rows = {r["method"]: r for r in data["summary"]}
    ident, obed = rows["identity"], rows["obedient"]
    assert ident["shift"] == 0.0 and ident["rank_plain"] == ident["rank_injected"] == pytest.approx((1 + 2 + 4) / 3)
    # the obedient reranker lifts the planted passage from position p (rank p + 1) to rank 1
    assert obed["shift_by_position"] == {"0": 0.0, "1": 1.0, "3": 3.0}
    assert obed["injected_at_top"] == 1.0 and obed["rank_injected"] == 1.0
    # the planted passage comes from another query and is never one judged for this one
    rec = data["methods"]["identity"]["records"]["q0"]
    assert rec["planted_docid"] == "d10" and rec["baseline_ndcg"] == 1.0
    # planted first: the relevant passage drops to rank 2 -> nDCG = (1/log2(3)) / 1
    assert rec["cases"][0]["ndcg"] == pytest.approx(0.6309, abs=1e-4)


def test_results_resume_and_refuse_other_settings(tmp_path):
    run(QUERIES[:2], QRELS, [MethodSpec("identity")], tmp_path, depth=3, dataset="toy")
    data = run(QUERIES, QRELS, [MethodSpec("identity")], tmp_path, depth=3, dataset="toy")
    assert sorted(data["methods"]["identity"]["records"]) == ["q0", "q1", "q2"]
    with pytest.raises(ValueError, match="other settings"):
        run(QUERIES, QRELS, [MethodSpec("identity")], tmp_path, depth=2, dataset="toy")


def _write_files(tmp_path):
    """QUERIES as a RankGPT-style candidates file and QRELS as a TREC qrels file."""
    cands = tmp_path / "c.jsonl"
    cands.write_text("".join(
        json.dumps({"query": q.query, "hits": [{"qid": q.qid, "docid": c.docid, "content": c.text, "score": c.score}
                                                for c in q.candidates]}) + "\n" for q in QUERIES))
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("".join(f"{q} 0 {d} {g}\n" for q, docs in QRELS.items() for d, g in docs.items()))
    return cands, qrels


def test_cli_writes_the_report(tmp_path, capsys):
    cands, qrels = _write_files(tmp_path)
    out = tmp_path / "out"
    assert main(["bench-injection", "--candidates", str(cands), "--qrels", str(qrels), "--depth", "3",
                 "--positions", "0,3", "--method", "identity", "--out", str(out)]) == 0
    assert "| identity | 3 | 2.50 | 2.50 | +0.00 |" in capsys.readouterr().out
    assert (out / "results.md").exists()


def test_cli_skip_leaves_out_the_first_queries(tmp_path, capsys):
    cands, qrels = _write_files(tmp_path)
    out = tmp_path / "out"
    assert main(["bench-injection", "--candidates", str(cands), "--qrels", str(qrels), "--depth", "3",
                 "--skip", "1", "--method", "identity", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert sorted(data["methods"]["identity"]["records"]) == ["q1", "q2"]
