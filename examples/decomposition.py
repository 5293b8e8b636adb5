"""Query decomposition over HotpotQA paragraphs: sub-questions, pooled retrieval, one rerank.

Builds a FAISS index (MiniLM) over the paragraphs of the first ``--questions`` shared HotpotQA
questions, then for one question prints the sub-questions the model wrote, the final
paragraphs with their rerank score, which queries found each (query index and rank), and
whether both supporting paragraphs were found. ``--face llamaindex`` / ``--face langchain``
runs the same pipeline through the framework retriever (wrapping the framework's FAISS
retriever) instead of the framework-free one.

Run:
    python examples/decomposition.py --model ~/.cache/rerank-models/qwen --question-index 0

Defaults: ``--model`` from $RERANK_MODEL, else $RERANK_TEST_LLM; ``--embed-model`` from
$RERANK_EMBED_MODEL; data from $RERANK_DATA_DIR/hotpotqa (else ../shared/data/hotpotqa).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("RERANK_MODEL") or os.environ.get("RERANK_TEST_LLM"))
    parser.add_argument("--embed-model", default=os.environ.get("RERANK_EMBED_MODEL"))
    parser.add_argument("--questions", type=int, default=20, help="index the paragraphs of the first N questions")
    parser.add_argument("--question-index", type=int, default=0)
    parser.add_argument("--k", type=int, default=5, help="paragraphs retrieved per query")
    parser.add_argument("--top", type=int, default=5, help="paragraphs shown")
    parser.add_argument("--face", choices=["core", "llamaindex", "langchain"], default="core")
    args = parser.parse_args(argv)
    if not args.model or not args.embed_model:
        parser.error("--model and --embed-model are required (or set RERANK_TEST_LLM / RERANK_EMBED_MODEL)")

    from rerank_plugins import registry
    from rerank_plugins.decomposition import Decomposer, DecompositionRetriever
    from rerank_plugins.evaluation.decomposition_bench import build_corpus
    from rerank_plugins.evaluation.loaders import default_data_dir, load_multihop
    from rerank_plugins.retrieval import FaissIndex
    from rerank_plugins.scoring import get_core

    examples = load_multihop(default_data_dir() / "hotpotqa" / "dev_250.jsonl")[: args.questions]
    corpus, supporting = build_corpus(examples)
    index = FaissIndex.build(list(corpus.values()), ids=list(corpus), embedder=args.embed_model, kind="flat")
    core = get_core(args.model)  # one model writes the sub-questions and reranks
    decomposer = Decomposer(core, max_subquestions=3)
    reranker = registry.create("pointwise", model=core)
    ex = examples[args.question_index]
    print(f"Q: {ex.question}\n")
    t0 = time.perf_counter()
    if args.face == "core":
        pipe = DecompositionRetriever(index, decomposer=decomposer, reranker=reranker, k=args.k, top_k=args.top)
        result = pipe.retrieve(ex.question)
        print(
            "sub-questions:", result.decomposition.sub_questions, "(fallback)" if result.decomposition.fallback else ""
        )
        rows = [(d.id, d.rerank_score, d.trace()) for d in result.documents]
    elif args.face == "llamaindex":
        from llama_index.postprocessor.rerank_plugins import DecompositionRetriever as Face
        from llama_index.postprocessor.rerank_plugins import FaissRetriever

        nodes = Face(
            FaissRetriever(index, similarity_top_k=args.k), llm=decomposer, reranker=reranker, top_n=args.top
        ).retrieve(ex.question)
        rows = [(n.node.node_id, n.score, n.node.metadata["found_by"]) for n in nodes]
    else:
        from langchain_rerank_plugins import DecompositionRetriever as Face
        from langchain_rerank_plugins import FaissRetriever

        docs = Face(
            retriever=FaissRetriever(index=index, k=args.k), llm=decomposer, reranker=reranker, top_n=args.top
        ).invoke(ex.question)
        rows = [(d.id, d.metadata["relevance_score"], d.metadata["found_by"]) for d in docs]
    elapsed = time.perf_counter() - t0
    for doc_id, score, trace in rows:
        mark = "*" if doc_id in supporting[ex.qid] else " "
        found = ", ".join(f"q{t['query_index']}#{t['rank']}" for t in trace)
        print(f"{mark} {score:7.3f}  [{found}]  {corpus[doc_id][:90]!r}")
    both = all(s in {r[0] for r in rows} for s in supporting[ex.qid])
    print(f"\nboth supporting paragraphs in the top {args.top}: {both}   ({elapsed:.1f} s; * = supporting)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
