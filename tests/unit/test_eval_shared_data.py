"""The published BM25 figures on the shared data, through our loaders and metrics.

BM25 nDCG@10: TREC DL 2019 passage (43 queries) 0.5058, BEIR SciFact test (300 queries,
multifield BM25 run) 0.6789. Skipped when ../shared/data (or $RERANK_DATA_DIR) is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rerank_plugins.evaluation import (
    evaluate,
    load_beir,
    load_candidates,
    load_multihop,
    load_trec_qrels,
    load_trec_run,
    rerank_queries_from_run,
)


def test_dl19_bm25_candidates(data_dir: Path) -> None:
    dl = data_dir / "trec-dl-2019"
    queries = load_candidates(dl / "bm25_dl19_top100.jsonl")
    qrels = load_trec_qrels(dl / "qrels.dl19-passage.txt")
    assert len(queries) == 43 and {len(q.candidates) for q in queries} == {100}
    assert sum(len(v) for v in qrels.values()) == 9260
    ev = evaluate(qrels, {q.qid: [c.docid for c in q.candidates] for q in queries}, ["nDCG@10"])
    assert round(ev.aggregate["nDCG@10"], 4) == 0.5058
    # The same run in TREC format gives the same figure.
    run = load_trec_run(dl / "trec_results_dl19_top100.txt")
    ev2 = evaluate(qrels, {q: [d for d, _ in docs] for q, docs in run.items()}, ["nDCG@10"])
    assert ev2.aggregate["nDCG@10"] == pytest.approx(ev.aggregate["nDCG@10"], abs=1e-12)


def test_scifact_bm25_run(data_dir: Path) -> None:
    sf = data_dir / "scifact"
    run = load_trec_run(sf / "runs" / "run.bm25.scifact.txt")
    ds = load_beir(sf, split="test", ids={d for docs in run.values() for d, _ in docs})
    assert len(ds.queries) == 300 and sum(len(v) for v in ds.qrels.values()) == 339
    queries = rerank_queries_from_run(run, ds.queries, ds.corpus)
    assert len(queries) == 300
    ev = evaluate(ds.qrels, {q.qid: [c.docid for c in q.candidates] for q in queries}, ["nDCG@10"])
    assert round(ev.aggregate["nDCG@10"], 4) == 0.6789


def test_hotpotqa_multihop(data_dir: Path) -> None:
    examples = load_multihop(data_dir / "hotpotqa" / "dev_250.jsonl")
    assert len(examples) == 250
    assert {len(e.contexts) for e in examples} == {10}
    assert {sum(c.is_supporting for c in e.contexts) for e in examples} == {2}
