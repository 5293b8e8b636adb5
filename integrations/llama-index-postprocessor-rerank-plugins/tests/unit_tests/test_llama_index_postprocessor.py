"""LlamaIndex-specific behaviour (the framework-neutral contract is tests/contract/test_adapter_contract.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.bridge.pydantic import Field
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.rerank_plugins import (
    POSTPROCESSORS,
    IdentityRerank,
    RerankPluginsRerank,
)

from rerank_plugins.testing import KeywordReranker
from rerank_plugins.types import BaseReranker


class RecordingReranker(KeywordReranker):
    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def score(self, query: str, documents: list[str]) -> list[float]:
        self.seen.append(list(documents))
        return super().score(query, documents)


class _Events(BaseEventHandler):
    events: list[Any] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "_Events"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, ReRankStartEvent | ReRankEndEvent):
            self.events.append(event)


@pytest.fixture
def events() -> Any:
    handler = _Events(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler.events
    root.event_handlers.remove(handler)


def _nodes() -> list[NodeWithScore]:
    texts = ["red apple pie", "blue sky", "red apple"]
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}", metadata={"title": f"T{i}"}), score=1.0 - i / 10)
        for i, t in enumerate(texts)
    ]


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_rerank_events(events: list[Any], run_async: bool) -> None:
    pp = RerankPluginsRerank(reranker=KeywordReranker(), top_n=2)
    nodes = _nodes()
    if run_async:
        out = asyncio.run(pp.apostprocess_nodes(nodes, query_str="red apple"))
    else:
        out = pp.postprocess_nodes(nodes, query_str="red apple")
    start, end = events
    assert isinstance(start, ReRankStartEvent) and isinstance(end, ReRankEndEvent)
    assert start.query.query_str == "red apple"
    assert start.top_n == 2
    assert start.model_name == "KeywordReranker"
    assert [n.node.node_id for n in start.nodes] == ["n0", "n1", "n2"]
    assert [n.node.node_id for n in end.nodes] == [n.node.node_id for n in out] == ["n0", "n2"]


def test_event_model_name_is_the_model_or_strategy(events: list[Any]) -> None:
    IdentityRerank().postprocess_nodes(_nodes(), query_str="q")
    assert events[0].model_name == "identity"
    assert events[0].top_n == 3  # top_n=None: every node


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_missing_query_bundle_is_a_value_error(run_async: bool) -> None:
    pp = IdentityRerank()
    with pytest.raises(ValueError, match="needs a query"):
        if run_async:
            asyncio.run(pp.apostprocess_nodes(_nodes()))
        else:
            pp.postprocess_nodes(_nodes())


def test_metadata_mode_embed_by_default_and_configurable() -> None:
    fake = RecordingReranker()
    node = TextNode(text="body", metadata={"title": "T", "secret": "s"}, excluded_embed_metadata_keys=["secret"])
    nodes = [NodeWithScore(node=node, score=0.5)]
    RerankPluginsRerank(reranker=fake).postprocess_nodes(nodes, query_str="q")
    RerankPluginsRerank(reranker=fake, metadata_mode=MetadataMode.NONE).postprocess_nodes(nodes, query_str="q")
    RerankPluginsRerank(reranker=fake, metadata_mode="all").postprocess_nodes(nodes, query_str="q")
    assert fake.seen == [["title: T\n\nbody"], ["body"], ["title: T\nsecret: s\n\nbody"]]


def test_retrieval_score_kept_out_of_llm_and_embed_text() -> None:
    out = IdentityRerank().postprocess_nodes(_nodes(), query_str="q")
    assert out[0].node.metadata == {"title": "T0", "retrieval_score": 1.0, "rerank_score": 0.0, "rerank_relevance": 1.0}
    assert out[0].node.get_content(metadata_mode=MetadataMode.LLM) == "title: T0\n\nred apple pie"
    assert out[0].node.get_content(metadata_mode=MetadataMode.EMBED) == "title: T0\n\nred apple pie"
    # the node identity is preserved (same id, same text)
    assert out[0].node.node_id == "n0"


def test_keep_retrieval_score_false() -> None:
    out = IdentityRerank(keep_retrieval_score=False).postprocess_nodes(_nodes(), query_str="q")
    assert out[0].node.metadata == {"title": "T0", "rerank_score": 0.0, "rerank_relevance": 1.0}
    assert [n.score for n in out] == [0.0, -1.0, -2.0]
    assert out[0].node.get_content(metadata_mode=MetadataMode.LLM) == "title: T0\n\nred apple pie"


def test_class_name_per_class() -> None:
    for cls in [*POSTPROCESSORS.values(), RerankPluginsRerank]:
        assert cls.class_name() == cls.__name__


def test_fields_have_descriptions() -> None:
    for cls in [*POSTPROCESSORS.values(), RerankPluginsRerank]:
        for name in cls.model_fields:  # strategy options too
            assert name == "callback_manager" or cls.model_fields[name].description, (cls.__name__, name)
    assert RerankPluginsRerank.model_fields["reranker"].description
    assert RerankPluginsRerank.model_fields["reranker_kwargs"].description


def test_round_trip_through_dict() -> None:
    pp = RerankPluginsRerank(reranker="identity", top_n=2, metadata_mode=MetadataMode.NONE)
    data = pp.to_dict()
    assert data["class_name"] == "RerankPluginsRerank"
    again = RerankPluginsRerank.from_dict(data)
    assert (again.reranker, again.top_n, again.metadata_mode) == ("identity", 2, MetadataMode.NONE)


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_inside_a_query_engine(run_async: bool) -> None:
    """A real VectorStoreIndex + RetrieverQueryEngine with mock embedding and LLM (no weights)."""
    docs = ["red apple pie recipe", "blue sky at noon", "green apple", "red apple orchard"]
    index = VectorStoreIndex(
        [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(docs)], embed_model=MockEmbedding(embed_dim=8)
    )
    engine = index.as_query_engine(
        llm=MockLLM(max_tokens=4),
        similarity_top_k=4,
        node_postprocessors=[RerankPluginsRerank(reranker=KeywordReranker(), top_n=2)],
    )
    query = QueryBundle("red apple orchard")
    response = asyncio.run(engine.aquery(query)) if run_async else engine.query(query)
    assert [n.node.node_id for n in response.source_nodes] == ["n3", "n0"]
    assert [n.score for n in response.source_nodes] == [3.0, 2.0]


def test_async_awaits_the_reranker_coroutine() -> None:
    """_apostprocess_nodes is our own coroutine, not BaseNodePostprocessor's thread wrapper."""
    calls: list[str] = []

    class Async(BaseReranker):
        def score(self, query: str, documents: list[str]) -> list[float]:
            raise AssertionError("the sync path must not be used")

        async def arerank_scores(self, query: str, documents: Any, top_k: int | None = None) -> Any:
            calls.append("arerank_scores")
            return KeywordReranker().rerank_scores(query, documents, top_k)

    out = asyncio.run(RerankPluginsRerank(reranker=Async()).apostprocess_nodes(_nodes(), query_str="red apple"))
    assert calls == ["arerank_scores"]
    assert [n.node.node_id for n in out] == ["n0", "n2", "n1"]
