"""Real parts: an InMemoryVectorStore over 200 SciFact documents embedded with MiniLM, a
ContextualCompressionRetriever with our PointwiseRerank on SmolLM2, inside an LCEL chain.

The answer-writing LLM is LangChain's mock ``FakeListChatModel``: LangChain's own local HF
integration (``langchain-huggingface``) pins ``huggingface-hub<2``, which would downgrade the
hub client that transformers and the core use, so it is not installed. Embeddings are a small
``Embeddings`` over sentence-transformers (the provisioned MiniLM folder).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_rerank_plugins import PointwiseRerank

from rerank_plugins import registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_QUERIES = 1  # CPU time: each query is several SmolLM2 calls
K = 10  # candidates from the vector store
TOP_N = 3


class MiniLMEmbeddings(Embeddings):
    """Sentence-transformers embeddings from a local folder (normalized, so cosine = dot)."""

    def __init__(self, path: Path) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device="cpu")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode(texts, normalize_embeddings=True, batch_size=32).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


@pytest.fixture(scope="module")
def store(scifact: Any, minilm: Path) -> InMemoryVectorStore:
    from langchain_core.documents import Document

    vs = InMemoryVectorStore(MiniLMEmbeddings(minilm))
    vs.add_documents([Document(page_content=t, id=d, metadata={"docid": d}) for d, t in scifact.corpus.items()])
    return vs


def test_contextual_compression_retriever_in_a_chain(scifact: Any, smollm2: Path, store: InMemoryVectorStore) -> None:
    base = store.as_retriever(search_kwargs={"k": K})
    compressor = PointwiseRerank(model=str(smollm2), top_n=TOP_N)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)
    direct = registry.create("pointwise", model=str(smollm2))
    assert compressor.reranker_instance.core is direct.core  # type: ignore[attr-defined]

    prompts: list[str] = []
    prompt = ChatPromptTemplate.from_template("Context:\n{context}\n\nClaim: {question}\nIs the claim supported?")
    chain = (
        {
            "context": retriever | (lambda docs: "\n\n".join(d.metadata["docid"] for d in docs)),
            "question": RunnablePassthrough(),
        }
        | prompt
        | RunnableLambda(lambda p: prompts.append(p.to_string()) or p)
        | FakeListChatModel(responses=["supported"])
        | StrOutputParser()
    )

    for qid, query in list(scifact.queries.items())[:N_QUERIES]:
        candidates = base.invoke(query)
        assert set(scifact.qrels[qid]) & {d.id for d in candidates}, qid
        hits = direct.rerank(query, [d.page_content for d in candidates], TOP_N)
        expected_ids = [candidates[h.index].id for h in hits]

        docs = retriever.invoke(query)
        assert [d.id for d in docs] == expected_ids
        assert [d.metadata["relevance_score"] for d in docs] == pytest.approx([h.score for h in hits], abs=1e-4)
        adocs = asyncio.run(retriever.ainvoke(query))
        assert [d.id for d in adocs] == expected_ids
        assert [d.metadata["relevance_score"] for d in adocs] == pytest.approx([h.score for h in hits], abs=1e-4)

        assert chain.invoke(query) == "supported"
        assert prompts[-1].startswith("Human: Context:\n" + "\n\n".join(expected_ids) + "\n\nClaim: ")
