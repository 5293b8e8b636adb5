"""FaissRetriever (LangChain face of rerank_plugins.retrieval) with the hashing embedder: no weights."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("faiss")

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_rerank_plugins import FaissRetriever, RerankPluginsRerank
from pydantic import ValidationError

from rerank_plugins.retrieval import FaissIndex, HashingEmbedder
from rerank_plugins.testing import KeywordReranker

DOCS = ["red apple pie recipe", "blue sky at noon", "green apple", "red apple orchard"]


@pytest.fixture
def retriever() -> FaissRetriever:
    docs = [Document(page_content=t, id=f"d{i}", metadata={"i": i}) for i, t in enumerate(DOCS)]
    return FaissRetriever.from_documents(docs, embedder=HashingEmbedder(64), k=3)


def test_invoke_returns_the_index_results_as_documents(retriever: FaissRetriever) -> None:
    assert isinstance(retriever, BaseRetriever)
    got = retriever.invoke("red apple orchard")
    want = retriever.index.search("red apple orchard", k=3)
    assert [(d.id, d.page_content, d.metadata) for d in got] == [
        (r.id, r.text, {**r.metadata, "score": r.score}) for r in want
    ]
    assert got[0].id == "d3"
    assert asyncio.run(retriever.ainvoke("red apple orchard")) == got


def test_documents_without_ids_save_and_load(tmp_path) -> None:
    docs = [Document(page_content="alpha beta", metadata={"src": "x"}), Document(page_content="gamma")]
    FaissRetriever.from_documents(docs, embedder=HashingEmbedder(16)).index.save(tmp_path / "idx")
    [hit] = FaissRetriever.load(tmp_path / "idx", k=1).invoke("beta")
    assert (hit.id, hit.page_content, hit.metadata["src"]) == ("0", "alpha beta", "x")


def test_fields_are_checked() -> None:
    with pytest.raises(ValidationError):
        FaissRetriever(index=FaissIndex(HashingEmbedder(8)), k=0)
    with pytest.raises(ValidationError):
        FaissRetriever(index="not an index")  # type: ignore[arg-type]
    assert FaissRetriever(index=FaissIndex(HashingEmbedder(8))).invoke("anything") == []


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_retrieve_with_faiss_then_rerank(retriever: FaissRetriever, run_async: bool) -> None:
    pipeline = ContextualCompressionRetriever(
        base_retriever=retriever, base_compressor=RerankPluginsRerank(reranker=KeywordReranker(), top_n=2)
    )
    q = "red apple orchard"
    docs = asyncio.run(pipeline.ainvoke(q)) if run_async else pipeline.invoke(q)
    assert [(d.id, d.metadata["relevance_score"]) for d in docs] == [("d3", 3.0), ("d0", 2.0)]
    assert docs[0].metadata["score"] == retriever.invoke(q)[0].metadata["score"]
