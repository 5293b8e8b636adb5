"""Count the prompts each PRP schedule asks for on TREC DL19, without a model.

The comparator prefers the passage with the higher qrels grade (equal grades: 0.5), so the
counts are those of a consistent ranker; each pair counts twice (both prompt orders).

Usage:
    python scripts/prp_counts.py ../shared/data/trec-dl-2019 [--k 10]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

from rerank_plugins.evaluation.loaders import load_candidates, load_trec_qrels
from rerank_plugins.rerankers.pairwise import allpair, heapsort_topk, sliding_topk


def count(schedule: str, grades: Sequence[int], k: int) -> tuple[int, int]:
    """(prompts, rounds) one schedule asks for over candidates with these grades."""
    rounds: list[int] = []

    def compare(pairs: Sequence[tuple[int, int]]) -> list[float]:
        rounds.append(len(pairs))
        return [1.0 if grades[i] > grades[j] else 0.0 if grades[i] < grades[j] else 0.5 for i, j in pairs]

    n = len(grades)
    if schedule == "allpair":
        allpair(n, compare)
    elif schedule == "heapsort":
        heapsort_topk(n, k, compare)
    else:
        sliding_topk(n, k, compare)
    return 2 * sum(rounds), len(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the trec-dl-2019 data folder")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    queries = load_candidates(args.folder / "bm25_dl19_top100.jsonl")
    qrels = load_trec_qrels(args.folder / "qrels.dl19-passage.txt")
    print("| N | schedule | prompts mean | prompts max | rounds mean | rounds max | allpair N(N-1) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n in (10, 20, 100):
        for schedule in ("allpair", "heapsort", "sliding"):
            counts = [
                count(schedule, [qrels.get(q.qid, {}).get(c.docid, 0) for c in q.candidates[:n]], args.k)
                for q in queries
            ]
            prompts, rounds = [c[0] for c in counts], [c[1] for c in counts]
            print(
                f"| {n} | {schedule} | {statistics.mean(prompts):.1f} | {max(prompts)} | "
                f"{statistics.mean(rounds):.1f} | {max(rounds)} | {n * (n - 1)} |"
            )


if __name__ == "__main__":
    main()
