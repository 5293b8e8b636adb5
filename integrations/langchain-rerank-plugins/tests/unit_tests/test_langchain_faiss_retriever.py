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
    for k in (0, True, "2", 2.0):
        with pytest.raises(ValidationError, match=r"\bk\b"):
            FaissRetriever(index=FaissIndex(HashingEmbedder(8)), k=k)
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


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_k_at_call_time_overrides_the_field_for_that_call(retriever: FaissRetriever, run_async: bool) -> None:
    q = "red apple orchard"

    def call(**kwargs: object) -> list[Document]:
        return asyncio.run(retriever.ainvoke(q, **kwargs)) if run_async else retriever.invoke(q, **kwargs)

    want = [r.id for r in retriever.index.search(q, k=4)]
    assert [d.id for d in call(k=1)] == want[:1]
    assert [d.id for d in call(k=4)] == want
    assert [d.id for d in call(k=10)] == want  # no more than the index holds
    assert [d.id for d in call()] == want[:3]  # the field is untouched
    assert retriever.k == 3


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "2"])
def test_a_bad_call_time_k_is_a_value_error(retriever: FaissRetriever, run_async: bool, bad: object) -> None:
    with pytest.raises(ValueError, match="k must be a positive int"):
        asyncio.run(retriever.ainvoke("apple", k=bad)) if run_async else retriever.invoke("apple", k=bad)


def test_an_unknown_call_time_keyword_is_a_value_error_not_ignored(retriever: FaissRetriever) -> None:
    with pytest.raises(ValueError, match="unexpected keyword argument.*'top_k'.*k="):
        retriever.invoke("apple", top_k=1)
    with pytest.raises(ValueError, match="'top_k'"):
        asyncio.run(retriever.ainvoke("apple", top_k=1))
    assert len(retriever.invoke("apple", verbose=True)) == 3  # LangChain's own invoke keyword


def test_k_from_a_chain_config_and_through_a_compression_retriever(retriever: FaissRetriever) -> None:
    from langchain_core.runnables import ConfigurableField

    configurable = retriever.configurable_fields(k=ConfigurableField(id="k"))
    assert len(configurable.invoke("red apple", config={"configurable": {"k": 1}})) == 1
    assert len(configurable.invoke("red apple")) == 3
    pipeline = ContextualCompressionRetriever(
        base_retriever=retriever, base_compressor=RerankPluginsRerank(reranker=KeywordReranker())
    )
    assert len(pipeline.invoke("red apple", k=2)) == 2  # forwarded to the base retriever


def test_the_k_field_is_a_strict_positive_int() -> None:
    index = FaissIndex(HashingEmbedder(8))
    for bad in (True, "2", 1.5):
        with pytest.raises(ValidationError, match="k"):
            FaissRetriever(index=index, k=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("query", ["", "   "])
def test_blank_query_is_a_value_error(retriever: FaissRetriever, query: str) -> None:
    with pytest.raises(ValueError, match="query must be a non-empty string"):
        retriever.invoke(query)
    with pytest.raises(ValueError, match="query must be a non-empty string"):
        asyncio.run(retriever.ainvoke(query))


def test_retrieved_metadata_is_not_the_index_s() -> None:
    docs = [Document(page_content="alpha", id="a", metadata={"tags": ["x"]})]
    r = FaissRetriever.from_documents(docs, embedder=HashingEmbedder(16))
    r.invoke("alpha")[0].metadata["tags"].append("edited")
    assert r.invoke("alpha")[0].metadata["tags"] == ["x"]
    assert docs[0].metadata == {"tags": ["x"]}
