"""The LlamaIndex decomposition retriever over fake retrievers and fake LLMs (no model weights)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.llms import MockLLM
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.rerank_plugins import DecompositionRetriever
from llama_index.postprocessor.rerank_plugins.decomposition import decomposer_from_llm

from rerank_plugins.decomposition import Decomposer
from rerank_plugins.testing import KeywordReranker
from rerank_plugins.types import BaseReranker

CORPUS = {
    "n": "NVIDIA reported a profit of 30 billion in 2023",
    "a": "Apple reported a profit of 97 billion in 2023",
    "g": "Google reported a profit of 74 billion in 2023",
    "f": "Apples and pears are fruit",
}
SUBS = "1. NVIDIA profit 2023\n2. Apple profit 2023\n3. Google profit 2023"
SUBS_LIST = ["NVIDIA profit 2023", "Apple profit 2023", "Google profit 2023"]
QUESTION = "Which company made the biggest profit?"


class WordRetriever(BaseRetriever):
    """Top-k by shared lower-case words; records the queries and the peak number of concurrent async calls."""

    def __init__(self, k: int = 1, delay: float = 0.0) -> None:
        self.k, self.delay = k, delay
        self.queries: list[str] = []
        self.bundles: list[QueryBundle] = []
        self.active = 0
        self.peak = 0
        super().__init__()

    def _rank(self, query: str) -> list[NodeWithScore]:
        self.queries.append(query)
        words = set(query.lower().replace("?", "").split())
        scored = [(len(words & set(t.lower().split())), i, t) for i, t in CORPUS.items()]
        scored.sort(key=lambda s: -s[0])
        return [NodeWithScore(node=TextNode(id_=i, text=t, metadata={"src": i}), score=float(s)) for s, i, t in scored][
            : self.k
        ]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.bundles.append(query_bundle)
        return self._rank(query_bundle.query_str)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.bundles.append(query_bundle)
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(self.delay)
        self.active -= 1
        return self._rank(query_bundle.query_str)


class LengthReranker(BaseReranker):
    name = "length"

    def __init__(self) -> None:
        self.queries: list[str] = []

    def score(self, query: str, documents: list[str]) -> list[float]:
        self.queries.append(query)
        return [float(len(d)) for d in documents]


def test_retrieves_for_question_and_subquestions_and_traces() -> None:
    base = WordRetriever(k=1)
    r = DecompositionRetriever(base, llm=lambda p: SUBS)
    nodes = r.retrieve(QUESTION)
    assert base.queries == [QUESTION, "NVIDIA profit 2023", "Apple profit 2023", "Google profit 2023"]
    assert [n.node.node_id for n in nodes] == ["n", "a", "g"]
    first = nodes[0].node.metadata
    assert first["src"] == "n"
    assert [(t["query_index"], t["query"], t["rank"]) for t in first["found_by"]] == [
        (0, QUESTION, 1),
        (1, "NVIDIA profit 2023", 1),
    ]
    assert first["fused_score"] == pytest.approx(2 / 61)
    assert nodes[0].score == pytest.approx(2 / 61)
    # the trace stays out of the LLM and embedding text
    assert "found_by" not in nodes[0].node.get_content(metadata_mode=MetadataMode.LLM)
    assert "fused_score" not in nodes[0].node.get_content(metadata_mode=MetadataMode.EMBED)


def test_reranks_the_pool_against_the_original_question_and_copies_nodes() -> None:
    base = WordRetriever(k=2)
    originals = base.retrieve("NVIDIA")
    rr = LengthReranker()
    r = DecompositionRetriever(base, llm=lambda p: SUBS, reranker=rr, top_n=2, metadata_mode=MetadataMode.NONE)
    nodes = r.retrieve(QUESTION)
    assert rr.queries == [QUESTION]
    assert [(n.node.node_id, n.score) for n in nodes] == [("n", 46.0), ("g", 46.0)]
    assert "found_by" not in originals[0].node.metadata  # the wrapped retriever's nodes are untouched


def test_registry_name_and_kwargs() -> None:
    r = DecompositionRetriever(WordRetriever(), reranker="identity")
    assert type(r.reranker).__name__ == "IdentityReranker"
    with pytest.raises(ValueError, match="reranker_kwargs"):
        DecompositionRetriever(WordRetriever(), reranker=KeywordReranker(), reranker_kwargs={"model": "x"})


def test_without_llm_it_is_retrieve_then_rerank() -> None:
    base = WordRetriever(k=3)
    nodes = DecompositionRetriever(base, reranker=KeywordReranker()).retrieve("Apple profit 2023")
    assert base.queries == ["Apple profit 2023"]
    assert nodes[0].node.node_id == "a"


def test_fallback_when_the_llm_output_is_unusable() -> None:
    base = WordRetriever()
    DecompositionRetriever(base, llm=lambda p: "Sorry, I cannot help.").retrieve(QUESTION)
    assert base.queries == [QUESTION]


def test_a_llama_index_llm_is_adapted() -> None:
    # MockLLM echoes the prompt: the instruction lines are recognised as an echo, the question too
    dec = decomposer_from_llm(MockLLM(), max_subquestions=2)
    assert isinstance(dec, Decomposer)
    result = dec.decompose(QUESTION)
    assert result.fallback is True
    assert result.reason == "no usable sub-question"


async def test_async_runs_subquestion_retrievals_concurrently() -> None:
    base = WordRetriever(k=1, delay=0.05)
    r = DecompositionRetriever(base, llm=lambda p: SUBS, reranker=LengthReranker())
    nodes = await r.aretrieve(QUESTION)
    assert base.peak == 4  # the question and its three sub-questions at once
    sync = DecompositionRetriever(WordRetriever(k=1), llm=lambda p: SUBS, reranker=LengthReranker()).retrieve(QUESTION)
    assert [(n.node.node_id, n.score) for n in nodes] == [(n.node.node_id, n.score) for n in sync]


async def test_async_llama_index_llm_uses_acomplete() -> None:
    class AsyncOnly(MockLLM):
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            raise AssertionError("the async path must not call complete")

        async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            from llama_index.core.base.llms.types import CompletionResponse

            return CompletionResponse(text=SUBS)

    base = WordRetriever(k=1)
    nodes = await DecompositionRetriever(base, llm=AsyncOnly()).aretrieve(QUESTION)
    assert [n.node.node_id for n in nodes] == ["n", "a", "g"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fusion": "borda"}, "fusion"),
        ({"top_n": 0}, "top_n must be a positive int or None"),
        ({"top_n": True}, "top_n must be a positive int or None"),
        ({"similarity_top_k": 0}, "similarity_top_k must be a positive int or None"),
        ({"similarity_top_k": "3"}, "similarity_top_k must be a positive int or None"),
        ({"top_n": 2, "similarity_top_k": 3}, "top_n and similarity_top_k"),
        ({"pool_size": 0}, "pool_size must be a positive int or None"),
        ({"top_n": "2"}, "top_n must be a positive int or None"),
        ({"top_n": 2.0}, "top_n must be a positive int or None"),
        ({"pool_size": True}, "pool_size must be a positive int or None"),
        ({"rrf_k": True}, "rrf_k"),
        ({"include_original": "false"}, "include_original"),
        ({"llm": lambda p: SUBS, "max_subquestions": True}, "max_subquestions"),
        ({"llm": 42}, "llm must be"),
        ({"reranker": 42}, "reranker must be"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DecompositionRetriever(WordRetriever(), **kwargs)


class StoreRetriever(BaseRetriever):
    """Returns the same stored node objects on every call, as a docstore-backed retriever does."""

    def __init__(self) -> None:
        self.store = [
            NodeWithScore(node=TextNode(id_=i, text=t, metadata={"src": i, "nested": {"tags": [i]}}), score=1.0)
            for i, t in CORPUS.items()
        ]
        super().__init__()

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self.store


def test_returned_nodes_are_deep_copies() -> None:
    base = StoreRetriever()
    before = [n.model_dump() for n in base.store]
    for reranker in (None, LengthReranker()):
        nodes = DecompositionRetriever(base, llm=lambda p: SUBS, reranker=reranker).retrieve(QUESTION)
        assert len(nodes) == len(CORPUS)
        for n in nodes:
            assert all(n.node is not s.node for s in base.store)
            n.node.metadata["nested"]["tags"].append("edited")
            n.node.metadata["src"] = "edited"
    assert [n.model_dump() for n in base.store] == before


def test_rejects_a_non_retriever() -> None:
    with pytest.raises(ValueError, match="BaseRetriever"):
        DecompositionRetriever(lambda q: [])  # type: ignore[arg-type]


# LlamaIndex's own retriever conventions, checked the way its retriever tests check them


def _ids_scores(nodes: list[NodeWithScore]) -> list[tuple[str, float | None]]:
    return [(n.node.node_id, n.score) for n in nodes]


def test_class() -> None:
    names_of_base_classes = [b.__name__ for b in DecompositionRetriever.__mro__]
    assert BaseRetriever.__name__ in names_of_base_classes


def test_retrieve_and_aretrieve_take_a_str_or_a_query_bundle() -> None:
    r = DecompositionRetriever(WordRetriever(k=1), llm=lambda p: SUBS, reranker=LengthReranker())
    want = _ids_scores(r.retrieve(QueryBundle(QUESTION)))
    assert [i for i, _ in want] == ["n", "g", "a"]
    assert _ids_scores(r.retrieve(QUESTION)) == want
    assert _ids_scores(asyncio.run(r.aretrieve(QUESTION))) == want
    assert _ids_scores(asyncio.run(r.aretrieve(QueryBundle(QUESTION)))) == want


@pytest.mark.parametrize("reranked", [False, True], ids=["fused", "reranked"])
@pytest.mark.parametrize("similarity_top_k", [1, 2, 3])
def test_similarity_top_k(similarity_top_k: int, reranked: bool) -> None:
    # as in LlamaIndex's QueryFusionRetriever: the number of nodes returned after fusion
    reranker = LengthReranker() if reranked else None
    r = DecompositionRetriever(
        WordRetriever(k=1), llm=lambda p: SUBS, reranker=reranker, similarity_top_k=similarity_top_k
    )
    assert r.top_n == r.similarity_top_k == similarity_top_k
    full = DecompositionRetriever(WordRetriever(k=1), llm=lambda p: SUBS, reranker=reranker).retrieve(QUESTION)
    assert len(full) == 3
    nodes = r.retrieve(QueryBundle(QUESTION))
    assert len(nodes) == similarity_top_k
    assert _ids_scores(nodes) == _ids_scores(full)[:similarity_top_k]
    assert _ids_scores(asyncio.run(r.aretrieve(QueryBundle(QUESTION)))) == _ids_scores(nodes)


def test_similarity_top_k_and_top_n_are_one_setting_checked_when_set() -> None:
    r = DecompositionRetriever(WordRetriever(k=1), llm=lambda p: SUBS, top_n=2)
    assert r.similarity_top_k == 2
    r.similarity_top_k = 1
    assert (r.top_n, len(r.retrieve(QUESTION))) == (1, 1)
    r.top_n = None
    assert (r.similarity_top_k, len(r.retrieve(QUESTION))) == (None, 3)
    for name, bad in [("similarity_top_k", 0), ("similarity_top_k", True), ("top_n", -1), ("pool_size", 2.0)]:
        with pytest.raises(ValueError, match=f"{name} must be a positive int or None"):
            setattr(r, name, bad)
    assert (r.top_n, r.pool_size) == (None, None)


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_the_query_bundle_reaches_the_wrapped_retriever_for_the_question(run_async: bool) -> None:
    # a query transform's custom_embedding_strs (HyDE) must survive the wrapper for the question itself
    base = WordRetriever(k=1)
    r = DecompositionRetriever(base, llm=lambda p: SUBS)
    bundle = QueryBundle(QUESTION, custom_embedding_strs=["NVIDIA reported a profit"])
    asyncio.run(r.aretrieve(bundle)) if run_async else r.retrieve(bundle)
    assert sorted((b.query_str, b.custom_embedding_strs) for b in base.bundles) == sorted(
        [(QUESTION, ["NVIDIA reported a profit"])] + [(q, None) for q in SUBS_LIST]
    )
