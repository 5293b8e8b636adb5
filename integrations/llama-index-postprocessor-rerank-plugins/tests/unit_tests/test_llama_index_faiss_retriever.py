"""FaissRetriever (LlamaIndex face of rerank_plugins.retrieval) with the hashing embedder: no weights."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("faiss")

from llama_index.core import Document
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import QueryBundle, TextNode
from llama_index.postprocessor.rerank_plugins import FaissRetriever, RerankPluginsRerank

from rerank_plugins.retrieval import FaissIndex, HashingEmbedder
from rerank_plugins.testing import KeywordReranker

DOCS = ["red apple pie recipe", "blue sky at noon", "green apple", "red apple orchard"]


@pytest.fixture
def retriever() -> FaissRetriever:
    nodes = [TextNode(text=t, id_=f"n{i}", metadata={"i": i}) for i, t in enumerate(DOCS)]
    return FaissRetriever.from_nodes(nodes, embedder=HashingEmbedder(64), similarity_top_k=3)


def test_retrieve_returns_the_index_results_as_nodes(retriever: FaissRetriever) -> None:
    assert isinstance(retriever, BaseRetriever)
    got = retriever.retrieve("red apple orchard")
    want = retriever.index.search("red apple orchard", k=3)
    assert [(n.node.node_id, n.node.get_content(), n.node.metadata, n.score) for n in got] == [
        (r.id, r.text, r.metadata, r.score) for r in want
    ]
    assert got[0].node.node_id == "n3"
    assert [n.score for n in asyncio.run(retriever.aretrieve("red apple orchard"))] == [n.score for n in got]


def test_documents_save_and_load(tmp_path) -> None:
    docs = [Document(text="alpha beta", id_="a", metadata={"src": "x"}), Document(text="gamma", id_="g")]
    FaissRetriever.from_nodes(docs, embedder=HashingEmbedder(16)).index.save(tmp_path / "idx")
    loaded = FaissRetriever.load(tmp_path / "idx", similarity_top_k=1)
    [hit] = loaded.retrieve("beta")
    assert (hit.node.node_id, hit.node.get_content(), hit.node.metadata) == ("a", "alpha beta", {"src": "x"})


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="index must be a rerank_plugins.retrieval.FaissIndex"):
        FaissRetriever("not an index")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="similarity_top_k must be a positive int"):
        FaissRetriever(FaissIndex(HashingEmbedder(8)), similarity_top_k=0)
    assert FaissRetriever(FaissIndex(HashingEmbedder(8))).retrieve("anything") == []


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_retrieve_with_faiss_then_rerank_in_a_query_engine(retriever: FaissRetriever, run_async: bool) -> None:
    engine = RetrieverQueryEngine.from_args(
        retriever, llm=MockLLM(max_tokens=4),
        node_postprocessors=[RerankPluginsRerank(reranker=KeywordReranker(), top_n=2)],
    )  # fmt: skip
    query = QueryBundle("red apple orchard")
    response = asyncio.run(engine.aquery(query)) if run_async else engine.query(query)
    assert [n.node.node_id for n in response.source_nodes] == ["n3", "n0"]
    assert [n.score for n in response.source_nodes] == [3.0, 2.0]
    first = retriever.retrieve(query)
    assert response.source_nodes[0].node.metadata["retrieval_score"] == first[0].score
