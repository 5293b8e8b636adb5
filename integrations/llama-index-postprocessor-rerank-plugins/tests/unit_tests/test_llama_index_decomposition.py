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
QUESTION = "Which company made the biggest profit?"


class WordRetriever(BaseRetriever):
    """Top-k by shared lower-case words; records the queries and the peak number of concurrent async calls."""

    def __init__(self, k: int = 1, delay: float = 0.0) -> None:
        self.k, self.delay = k, delay
        self.queries: list[str] = []
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
        return self._rank(query_bundle.query_str)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
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
        ({"top_n": 0}, "top_k"),
        ({"llm": 42}, "llm must be"),
        ({"reranker": 42}, "reranker must be"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DecompositionRetriever(WordRetriever(), **kwargs)


def test_rejects_a_non_retriever() -> None:
    with pytest.raises(ValueError, match="BaseRetriever"):
        DecompositionRetriever(lambda q: [])  # type: ignore[arg-type]
