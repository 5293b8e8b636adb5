"""What `score_threshold` keeps with `pointwise`, read from committed benchmark records (no model runs).

For each record: every (query, passage) of the reranked top-20, the passage's normalised relevance
(`PointwiseReranker.relevance`, the value `score_threshold` compares with) and whether the qrels judge
it relevant. For each threshold: the share of passages kept, the share of kept passages that are
relevant (precision) and the share of the relevant passages in the top-20 that are kept (recall).

    python benchmarks/threshold-derive.py > benchmarks/threshold-pointwise.md
"""

from __future__ import annotations

from pathlib import Path

from rerank_plugins.evaluation.compare import load_results
from rerank_plugins.evaluation.loaders import load_qrels
from rerank_plugins.evaluation.measure import method_records
from rerank_plugins.rerankers.pointwise import PointwiseReranker

ROOT = Path(__file__).resolve().parent
DL19_QRELS = ROOT.parent.parent / "shared/data/trec-dl-2019/qrels.dl19-passage.txt"
SCIFACT_QRELS = ROOT.parent.parent / "shared/data/scifact/qrels/test.tsv"
THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9)

# (record folder, what it is, qrels, the lowest grade that counts as relevant: TREC DL's 2)
RECORDS = [
    ("dl19-05b-43q-bfloat16", "DL19, 43 queries, BM25 top-20, 0.5B", DL19_QRELS, 2),
    ("dl19-15b-43q-bfloat16", "DL19, 43 queries, BM25 top-20, 1.5B", DL19_QRELS, 2),
    ("scifact-bm25-05b", "SciFact test, 100 queries, BM25 top-20, 0.5B", SCIFACT_QRELS, 1),
    ("scifact-dense-05b-pointwise", "SciFact test, 100 queries, dense top-20, 0.5B", SCIFACT_QRELS, 1),
    ("scifact-bm25-15b-pointwise", "SciFact test, 100 queries, BM25 top-20, 1.5B", SCIFACT_QRELS, 1),
    ("scifact-dense-15b-pointwise", "SciFact test, 100 queries, dense top-20, 1.5B", SCIFACT_QRELS, 1),
]


def judged_relevances(records: dict, qrels: dict[str, dict[str, int]], level: int) -> list[tuple[float, bool]]:
    """(relevance, is relevant) for every passage the `pointwise` method scored, over its per-query records."""
    pairs = []
    for qid, rec in records.items():
        # scores follow the ranking's order; the ranking goes on below the reranked depth, unscored
        relevance = PointwiseReranker.relevance(None, rec["scores"])
        reranked = rec["ranking"][: len(relevance)]
        judged = qrels.get(qid, {})
        pairs += [(r, judged.get(doc, 0) >= level) for doc, r in zip(reranked, relevance, strict=True)]
    return pairs


def main() -> None:
    qrels = {path: load_qrels(path) for path in (DL19_QRELS, SCIFACT_QRELS)}
    print("| record | queries | relevant share | threshold: kept / precision / recall |")
    print("|---|---:|---:|---|")
    for folder, label, qrels_path, level in RECORDS:
        # the run's configured queries, as `rerank-plugins compare` and the bench report count them
        records = method_records(load_results(ROOT / folder), "pointwise")
        pairs = judged_relevances(records, qrels[qrels_path], level)
        if not pairs:
            raise SystemExit(f"{folder}: no pointwise records")
        relevant = sum(rel for _, rel in pairs)
        cells = []
        for t in THRESHOLDS:
            kept = [rel for r, rel in pairs if r >= t]
            precision = f"{sum(kept) / len(kept):.2f}" if kept else "—"
            cells.append(f"{t}: {len(kept) / len(pairs):.2f} / {precision} / {sum(kept) / relevant:.2f}")
        values = sorted(r for r, _ in pairs)
        spread = f"relevance {values[0]:.2f}-{values[-1]:.2f}, median {values[len(values) // 2]:.2f}"
        print(f"| `{folder}` ({label}; {spread}) | {len(records)} | {relevant / len(pairs):.2f} | {'; '.join(cells)} |")


if __name__ == "__main__":
    main()
