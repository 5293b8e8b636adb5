"""RSS of Qwen2.5-Coder-1.5B's attention reranker (shipped heads) over SciFact test, BM25 top-20.

After each of the first N queries (the order of `benchmarks/heads-scifact-bm25-15b`): the RSS, then
the RSS after ``gc.collect()`` and glibc ``malloc_trim(0)``, and the Python object count. A count that
stays flat while RSS grows points at the allocator or native memory, not Python objects; memory that
``malloc_trim`` gives back was freed but kept by the allocator. Linux with glibc only.

    python scripts/memory_probe.py 6   # from the repository root, $RERANK_QUALITY_LLM_LARGE set
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import time

import psutil

from rerank_plugins.evaluation.loaders import load_beir, load_trec_run, rerank_queries_from_run
from rerank_plugins.rerankers.attention import AttentionReranker

RECORD = "benchmarks/heads-scifact-bm25-15b/results.json"
PROFILE = "rerank_plugins/rerankers/profiles/qwen2.5-coder-1.5b-instruct.json"


def main(n_queries: int) -> None:
    with open(RECORD) as f:
        qids = json.load(f)["config"]["queries"][:n_queries]
    data = load_beir("../shared/data/scifact", "test")
    run = load_trec_run("../shared/data/scifact/runs/run.bm25.scifact.txt")
    queries = rerank_queries_from_run({q: run[q][:20] for q in qids}, data.queries, data.corpus)
    libc = ctypes.CDLL("libc.so.6")
    process = psutil.Process()

    def rss_mb() -> int:
        return round(process.memory_info().rss / 2**20)

    reranker = AttentionReranker(
        model=os.environ["RERANK_QUALITY_LLM_LARGE"], dtype="bfloat16", doc_max_tokens=256, heads=PROFILE
    )
    print("before the first query (the model loads on first use)", rss_mb(), flush=True)
    for query in queries:
        start = time.monotonic()
        reranker.rerank(query.query, [c.text for c in query.candidates])
        before = rss_mb()
        gc.collect()
        libc.malloc_trim(0)
        print(
            f"q{query.qid} {time.monotonic() - start:.1f}s rss {before} -> trimmed {rss_mb()} "
            f"objs {len(gc.get_objects())}",
            flush=True,
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
