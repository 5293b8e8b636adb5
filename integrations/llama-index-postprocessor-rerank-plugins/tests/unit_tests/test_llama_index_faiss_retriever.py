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


# LlamaIndex's own retriever conventions, checked the way its retriever tests check them


def _ids_scores(nodes: list) -> list[tuple[str, float | None]]:
    return [(n.node.node_id, n.score) for n in nodes]


def test_class() -> None:
    names_of_base_classes = [b.__name__ for b in FaissRetriever.__mro__]
    assert BaseRetriever.__name__ in names_of_base_classes


@pytest.mark.parametrize("similarity_top_k", [1, 2, 3, 4])
def test_similarity_top_k(retriever: FaissRetriever, similarity_top_k: int) -> None:
    retriever.similarity_top_k = similarity_top_k
    query = QueryBundle("red apple orchard")
    nodes = retriever.retrieve(query)
    assert len(nodes) == similarity_top_k
    want = retriever.index.search(query.query_str, k=similarity_top_k)
    assert [n.node.node_id for n in nodes] == [r.id for r in want]
    assert _ids_scores(asyncio.run(retriever.aretrieve(query))) == _ids_scores(nodes)


def test_large_value_of_similarity_top_k() -> None:
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(DOCS)]
    retriever = FaissRetriever.from_nodes(nodes, embedder=HashingEmbedder(64), similarity_top_k=20)
    result_nodes = retriever.retrieve("What is red?")
    assert len(result_nodes) == len(nodes) < retriever.similarity_top_k
    assert {n.node.node_id for n in result_nodes} == {n.node_id for n in nodes}


def test_retrieve_and_aretrieve_take_a_str_or_a_query_bundle(retriever: FaissRetriever) -> None:
    want = _ids_scores(retriever.retrieve(QueryBundle("red apple orchard")))
    assert len(want) == 3
    assert _ids_scores(retriever.retrieve("red apple orchard")) == want
    assert _ids_scores(asyncio.run(retriever.aretrieve("red apple orchard"))) == want
    assert _ids_scores(asyncio.run(retriever.aretrieve(QueryBundle("red apple orchard")))) == want


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "2", None])
def test_similarity_top_k_is_checked_when_set(retriever: FaissRetriever, bad: object) -> None:
    with pytest.raises(ValueError, match="similarity_top_k must be a positive int"):
        retriever.similarity_top_k = bad  # type: ignore[assignment]
    assert retriever.similarity_top_k == 3
    with pytest.raises(ValueError, match="similarity_top_k must be a positive int"):
        FaissRetriever(retriever.index, similarity_top_k=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_custom_embedding_strs_are_what_is_embedded(retriever: FaissRetriever, run_async: bool) -> None:
    def retrieve(query: QueryBundle) -> list:
        return asyncio.run(retriever.aretrieve(query)) if run_async else retriever.retrieve(query)

    # a query transform (HyDE) keeps the question in query_str and puts the text to embed here
    hyde = QueryBundle("zebra", custom_embedding_strs=["red apple orchard"])
    assert _ids_scores(retrieve(hyde)) == _ids_scores(retriever.retrieve("red apple orchard"))
    # several strings: their embeddings are averaged, as LlamaIndex's vector retriever does
    strs = ["green apple", "blue sky"]
    mean = retriever.index.embedder.embed_queries(strs).mean(axis=0, keepdims=True)
    want = retriever.index.search_vectors(mean, k=3)[0]
    assert _ids_scores(retrieve(QueryBundle("zebra", custom_embedding_strs=strs))) == [(r.id, r.score) for r in want]
    assert {"n1", "n2"} <= {n.node.node_id for n in retrieve(QueryBundle("zebra", custom_embedding_strs=strs))}
    with pytest.raises(ValueError, match="custom_embedding_strs"):
        retrieve(QueryBundle("zebra", custom_embedding_strs=[]))
    with pytest.raises(ValueError, match="custom_embedding_strs"):
        retrieve(QueryBundle("zebra", custom_embedding_strs=["ok", 3]))  # type: ignore[list-item]


def test_a_precomputed_query_embedding_is_not_used(retriever: FaissRetriever) -> None:
    # it may come from another model (a vector retriever fills it in on a shared bundle)
    bundle = QueryBundle("red apple orchard", embedding=[1.0, 0.0])
    assert _ids_scores(retriever.retrieve(bundle)) == _ids_scores(retriever.retrieve("red apple orchard"))


@pytest.mark.parametrize("query", ["", "   "])
def test_blank_query_is_a_value_error(retriever: FaissRetriever, query: str) -> None:
    with pytest.raises(ValueError, match="query must be a non-empty string"):
        retriever.retrieve(query)
    with pytest.raises(ValueError, match="query must be a non-empty string"):
        asyncio.run(retriever.aretrieve(query))


def test_retrieved_metadata_is_not_the_index_s() -> None:
    nodes = [TextNode(text="alpha", id_="a", metadata={"tags": ["x"]})]
    r = FaissRetriever.from_nodes(nodes, embedder=HashingEmbedder(16))
    r.retrieve("alpha")[0].node.metadata["tags"].append("edited")
    assert r.retrieve("alpha")[0].node.metadata == {"tags": ["x"]}
    assert nodes[0].metadata == {"tags": ["x"]}
