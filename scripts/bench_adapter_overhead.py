"""Rerank latency overhead of the framework adapters over calling the reranker directly.

Per query, ``--docs`` SciFact documents: the reranker's own ``rerank`` / ``arerank`` against
the LlamaIndex postprocessor (``postprocess_nodes`` / ``apostprocess_nodes``) and the LangChain
compressor (``compress_documents`` / ``acompress_documents``) wrapping the same reranker object.
Calls are interleaved round-robin (direct, llama, langchain, direct, ...) so machine drift hits
all paths alike; the report gives median latency per call and the median overhead.

Run:
    python scripts/bench_adapter_overhead.py --strategy identity --repeats 2000
    flock /work/bench.lock python scripts/bench_adapter_overhead.py --strategy pointwise \\
        --model ~/.cache/rerank-models/smollm2 --queries 2 --repeats 4 --doc-max-tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", default="identity")
    parser.add_argument("--model", default=None, help="model for LLM strategies (hub id, folder or .gguf)")
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=200, help="calls per path (spread over the queries)")
    parser.add_argument("--doc-max-tokens", type=int, default=None, help="per-document token budget (LLM strategies)")
    parser.add_argument("--out", default=None, help="write the JSON report here")
    args = parser.parse_args(argv)

    from langchain_core.documents import Document
    from langchain_rerank_plugins import RerankPluginsRerank as LCRerank
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.rerank_plugins import RerankPluginsRerank as LIRerank

    from rerank_plugins import registry
    from rerank_plugins.evaluation.loaders import default_data_dir, load_beir
    from rerank_plugins.evaluation.measure import load_1min, machine

    ds = load_beir(default_data_dir() / "scifact", split="test")
    doc_texts = list(ds.corpus.values())
    queries = [ds.queries[q] for q in sorted(ds.queries, key=int)[: args.queries]]
    pools = [doc_texts[i * args.docs : (i + 1) * args.docs] for i in range(args.queries)]

    options: dict[str, Any] = {"model": args.model} if args.model else {}
    if args.doc_max_tokens:
        options["doc_max_tokens"] = args.doc_max_tokens
    reranker = registry.create(args.strategy, **options)
    li = LIRerank(reranker=reranker, top_n=None)
    lc = LCRerank(reranker=reranker, top_n=None)
    nodes = [[NodeWithScore(node=TextNode(text=t), score=0.0) for t in pool] for pool in pools]
    docs = [[Document(page_content=t) for t in pool] for pool in pools]

    sync_paths = {
        "direct": lambda i: reranker.rerank(queries[i], pools[i]),
        "llama_index": lambda i: li.postprocess_nodes(nodes[i], query_bundle=QueryBundle(queries[i])),
        "langchain": lambda i: lc.compress_documents(docs[i], queries[i]),
    }
    async_paths = {
        "direct": lambda i: reranker.arerank(queries[i], pools[i]),
        "llama_index": lambda i: li.apostprocess_nodes(nodes[i], query_bundle=QueryBundle(queries[i])),
        "langchain": lambda i: lc.acompress_documents(docs[i], queries[i]),
    }

    # warm-up: first calls pay for lazy imports and allocator growth
    for f in sync_paths.values():
        f(0)

    sync_t: dict[str, list[float]] = {k: [] for k in sync_paths}
    for r in range(args.repeats):
        i = r % len(queries)
        for name, f in sync_paths.items():
            t = time.perf_counter()
            f(i)
            sync_t[name].append(time.perf_counter() - t)

    async def run_async() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {k: [] for k in async_paths}
        for f in async_paths.values():
            await f(0)
        for r in range(args.repeats):
            i = r % len(queries)
            for name, f in async_paths.items():
                t = time.perf_counter()
                await f(i)
                out[name].append(time.perf_counter() - t)
        return out

    async_t = asyncio.run(run_async())

    def summary(times: dict[str, list[float]]) -> dict[str, Any]:
        direct = statistics.median(times["direct"])
        res: dict[str, Any] = {"direct_median_ms": direct * 1e3}
        for name in ("llama_index", "langchain"):
            med = statistics.median(times[name])
            diffs = [a - d for a, d in zip(times[name], times["direct"], strict=True)]
            res[name] = {
                "median_ms": med * 1e3,
                "overhead_ms_of_medians": (med - direct) * 1e3,
                "overhead_ms_median_paired": statistics.median(diffs) * 1e3,
            }
        return res

    report = {
        "strategy": args.strategy,
        "model": args.model,
        "docs_per_query": args.docs,
        "doc_max_tokens": args.doc_max_tokens,
        "queries": len(queries),
        "repeats": args.repeats,
        "sync": summary(sync_t),
        "async": summary(async_t),
        "machine": machine(),
        "load_1min_end": load_1min(),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
