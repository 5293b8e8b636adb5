"""LangChain retrieval chain with a rerank-plugins document compressor, over SciFact.

An InMemoryVectorStore over the first ``--docs`` SciFact documents (MiniLM embeddings through
sentence-transformers), a ContextualCompressionRetriever reranking the top ``--candidates`` with
``--strategy`` on ``--model``, in an LCEL chain. With ``--answer`` the chain's last step writes
an answer with the same loaded model (the shared scoring core's greedy ``generate``: no second
copy of the model); without it the chain prints the prompt it would send.

Run:
    python examples/langchain_retriever_chain.py --model ~/.cache/rerank-models/smollm2 \\
        --query "A deficiency of vitamin B12 increases blood levels of homocysteine." --answer

Defaults: ``--model`` from $RERANK_MODEL, else $RERANK_TEST_LLM; ``--embed-model`` from
$RERANK_EMBED_MODEL; data from $RERANK_DATA_DIR/scifact (else ../shared/data/scifact).
Needs: ``pip install langchain-rerank-plugins langchain-classic``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    from langchain_rerank_plugins import COMPRESSORS

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
    parser.add_argument("--strategy", default="pointwise", choices=sorted(COMPRESSORS))
    parser.add_argument("--query", default="A deficiency of vitamin B12 increases blood levels of homocysteine.")
    parser.add_argument("--docs", type=int, default=200, help="SciFact documents to index")
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--top-n", type=int, default=5)
    parser.add_argument("--answer", action="store_true", help="answer with the reranking model (LLM strategies)")
    args = parser.parse_args(argv)
    if args.strategy != "identity" and not args.model:
        parser.error("--model is required (or set RERANK_MODEL / RERANK_TEST_LLM)")
    if not args.embed_model:
        parser.error("--embed-model is required (or set RERANK_EMBED_MODEL)")

    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnablePassthrough
    from langchain_core.vectorstores import InMemoryVectorStore
    from sentence_transformers import SentenceTransformer

    from rerank_plugins.evaluation.loaders import default_data_dir, load_beir_corpus

    class STEmbeddings(Embeddings):
        def __init__(self, name: str) -> None:
            self.model = SentenceTransformer(name, device="cpu")

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return self.model.encode(texts, normalize_embeddings=True).tolist()

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    corpus = load_beir_corpus(default_data_dir() / "scifact" / "corpus.jsonl")
    store = InMemoryVectorStore(STEmbeddings(args.embed_model))
    store.add_documents([Document(page_content=t, id=d) for d, t in list(corpus.items())[: args.docs]])
    base_retriever = store.as_retriever(search_kwargs={"k": args.candidates})

    # The 3-line change to an existing app: import, build, wrap the retriever.
    compressor = COMPRESSORS[args.strategy](model=args.model if args.strategy != "identity" else None, top_n=args.top_n)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base_retriever)

    prompt = ChatPromptTemplate.from_template(
        "Answer from the context in one sentence.\n\nContext:\n{context}\n\nQuestion: {question}"
    )

    def answer(prompt_value: Any) -> str:
        text = prompt_value.to_string()
        if not args.answer:
            return f"(no --answer: prompt of {len(text)} characters built)"
        core = compressor.reranker_instance.core  # the model already loaded for reranking
        return core.generate([core.encode_chat([text]).input_ids], max_new_tokens=64)[0]

    chain = (
        {
            "context": retriever | (lambda docs: "\n\n".join(d.page_content for d in docs)),
            "question": RunnablePassthrough(),
        }
        | prompt
        | RunnableLambda(answer)
    )

    start = time.perf_counter()
    docs = retriever.invoke(args.query)
    print(f"query: {args.query}  ({time.perf_counter() - start:.1f} s)")
    for d in docs:
        print(f"  {d.metadata['relevance_score']:8.3f}  {d.id}: {d.page_content[:90]!r}")
    print(f"answer: {chain.invoke(args.query)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
