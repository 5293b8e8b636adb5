"""LlamaIndex query engine with a rerank-plugins node postprocessor, over SciFact.

An in-memory VectorStoreIndex over the first ``--docs`` SciFact documents (MiniLM embeddings),
top ``--candidates`` by similarity, reranked by ``--strategy`` on ``--model``, top ``--top-n`` kept.
With ``--answer`` an LLM writes an answer (LlamaIndex's ``HuggingFaceLLM`` over ``--model``,
a Hugging Face folder or hub id; ``pip install llama-index-llms-huggingface``); without it the
engine only retrieves and reranks.

Run:
    python examples/llamaindex_query_engine.py --model ~/.cache/rerank-models/smollm2 \\
        --query "A deficiency of vitamin B12 increases blood levels of homocysteine."

Defaults: ``--model`` from $RERANK_MODEL, else $RERANK_TEST_LLM; ``--embed-model`` from
$RERANK_EMBED_MODEL; data from $RERANK_DATA_DIR/scifact (else ../shared/data/scifact).
Needs: ``pip install llama-index-postprocessor-rerank-plugins llama-index-embeddings-huggingface``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    from llama_index.postprocessor.rerank_plugins import POSTPROCESSORS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default=os.environ.get("RERANK_MODEL") or os.environ.get("RERANK_TEST_LLM"),
        help="reranking model: hub id, folder or .gguf (default $RERANK_MODEL or $RERANK_TEST_LLM)",
    )
    parser.add_argument(
        "--embed-model",
        default=os.environ.get("RERANK_EMBED_MODEL"),
        help="sentence-transformers embedding model (default $RERANK_EMBED_MODEL)",
    )
    parser.add_argument("--strategy", default="pointwise", choices=sorted(POSTPROCESSORS))
    parser.add_argument("--query", default="A deficiency of vitamin B12 increases blood levels of homocysteine.")
    parser.add_argument("--docs", type=int, default=200, help="SciFact documents to index")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--top-n", type=int, default=5)
    parser.add_argument("--answer", action="store_true", help="write an answer with HuggingFaceLLM over --model")
    args = parser.parse_args(argv)
    if args.strategy not in ("identity",) and not args.model:
        parser.error("--model is required (or set RERANK_MODEL / RERANK_TEST_LLM)")
    if not args.embed_model:
        parser.error("--embed-model is required (or set RERANK_EMBED_MODEL)")

    from llama_index.core import VectorStoreIndex
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.schema import TextNode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from rerank_plugins.evaluation.loaders import default_data_dir, load_beir_corpus

    corpus = load_beir_corpus(default_data_dir() / "scifact" / "corpus.jsonl")
    nodes = [TextNode(text=text, id_=docid) for docid, text in list(corpus.items())[: args.docs]]
    index = VectorStoreIndex(nodes, embed_model=HuggingFaceEmbedding(model_name=args.embed_model, device="cpu"))

    # The 3-line change to an existing query engine: import, build, pass as a postprocessor.
    reranker = POSTPROCESSORS[args.strategy](
        model=args.model if args.strategy != "identity" else None, top_n=args.top_n
    )
    if args.answer:
        from llama_index.llms.huggingface import HuggingFaceLLM
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)

        def completion_to_prompt(text: str) -> str:  # instruct models answer through their chat template
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )

        llm = HuggingFaceLLM(
            model_name=args.model,
            tokenizer_name=args.model,
            max_new_tokens=64,
            device_map="cpu",
            generate_kwargs={"do_sample": False},
            completion_to_prompt=completion_to_prompt,
        )
        engine = RetrieverQueryEngine.from_args(
            index.as_retriever(similarity_top_k=args.candidates), llm=llm, node_postprocessors=[reranker]
        )
    else:  # retrieve and rerank only (NoText gets the LLM explicitly: no Settings.llm lookup)
        from llama_index.core.response_synthesizers.no_text import NoText

        engine = RetrieverQueryEngine(
            retriever=index.as_retriever(similarity_top_k=args.candidates),
            response_synthesizer=NoText(llm=MockLLM()),
            node_postprocessors=[reranker],
        )

    start = time.perf_counter()
    response = engine.query(args.query)
    print(f"query: {args.query}  ({time.perf_counter() - start:.1f} s)")
    for n in response.source_nodes:
        print(
            f"  {n.score:8.3f}  (retrieval {n.node.metadata['retrieval_score']:.3f})  "
            f"{n.node.node_id}: {n.node.get_content()[:90]!r}"
        )
    if args.answer:
        print(f"answer: {response.response}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
