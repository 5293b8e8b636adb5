"""The LangChain decomposition retriever over fake retrievers and fake chat models (no model weights)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import FakeListChatModel, FakeListLLM
from langchain_core.retrievers import BaseRetriever
from langchain_rerank_plugins import DecompositionRetriever
from langchain_rerank_plugins.decomposition import decomposer_from_llm, document_key
from pydantic import Field, PrivateAttr

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
    """Top-k by shared lower-case words; records queries and the peak number of concurrent async calls."""

    k: int = 1
    delay: float = 0.0
    _queries: list[str] = PrivateAttr(default_factory=list)
    _active: int = PrivateAttr(default=0)
    _peak: int = PrivateAttr(default=0)

    def _rank(self, query: str) -> list[Document]:
        self._queries.append(query)
        words = set(query.lower().replace("?", "").split())
        scored = sorted(((len(words & set(t.lower().split())), i, t) for i, t in CORPUS.items()), key=lambda s: -s[0])
        return [Document(id=i, page_content=t, metadata={"score": float(s), "src": i}) for s, i, t in scored][: self.k]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return self._rank(query)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        self._active += 1
        self._peak = max(self._peak, self._active)
        await asyncio.sleep(self.delay)
        self._active -= 1
        return self._rank(query)


class LengthReranker(BaseReranker):
    name = "length"

    def __init__(self) -> None:
        self.queries: list[str] = []

    def score(self, query: str, documents: list[str]) -> list[float]:
        self.queries.append(query)
        return [float(len(d)) for d in documents]


def test_retrieves_for_question_and_subquestions_and_traces() -> None:
    base = WordRetriever(k=1)
    docs = DecompositionRetriever(retriever=base, llm=lambda p: SUBS).invoke(QUESTION)
    assert sorted(base._queries) == sorted([QUESTION, "NVIDIA profit 2023", "Apple profit 2023", "Google profit 2023"])
    assert [d.id for d in docs] == ["n", "a", "g"]
    md = docs[0].metadata
    assert md["src"] == "n"
    assert [(t["query_index"], t["query"], t["rank"], t["score"]) for t in md["found_by"]] == [
        (0, QUESTION, 1, 1.0),
        (1, "NVIDIA profit 2023", 1, 3.0),
    ]
    assert md["fused_score"] == pytest.approx(2 / 61)
    assert "relevance_score" not in md  # not reranked


def test_reranks_against_the_original_question_and_copies_documents() -> None:
    base = WordRetriever(k=2)
    originals = base.invoke("NVIDIA")
    rr = LengthReranker()
    docs = DecompositionRetriever(retriever=base, llm=lambda p: SUBS, reranker=rr, top_n=2).invoke(QUESTION)
    assert rr.queries == [QUESTION]
    assert [(d.id, d.metadata["relevance_score"]) for d in docs] == [("n", 46.0), ("g", 46.0)]
    assert "found_by" not in originals[0].metadata


def test_a_chat_model_and_an_llm_are_adapted() -> None:
    chat = decomposer_from_llm(FakeListChatModel(responses=[SUBS]), max_subquestions=2)
    assert isinstance(chat, Decomposer)
    assert chat.decompose(QUESTION).sub_questions == ("NVIDIA profit 2023", "Apple profit 2023")
    llm = decomposer_from_llm(FakeListLLM(responses=["- Who leads Apple?"]))
    assert llm is not None and llm.decompose(QUESTION).sub_questions == ("Who leads Apple?",)


def test_content_blocks_are_joined() -> None:
    from langchain_core.messages import AIMessage
    from langchain_rerank_plugins.decomposition import _text

    assert _text(AIMessage(content=[{"type": "text", "text": "1. a b"}, "\n2. c d"])) == "1. a b\n2. c d"


def test_document_key() -> None:
    assert document_key(Document(page_content="x", id="7")) == "7"
    assert document_key(Document(page_content="x", metadata={"id": 8})) == "8"
    assert document_key(Document(page_content="x")) == "sha1:11f6ad8ec52a2984abaafd7c3b516503785c2072"


def test_documents_without_ids_dedup_by_text() -> None:
    class NoIds(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return [Document(page_content="same text"), Document(page_content=query)]

    docs = DecompositionRetriever(retriever=NoIds(), llm=lambda p: "- other query").invoke("first query")
    assert [d.page_content for d in docs] == ["same text", "first query", "other query"]
    assert [t["query_index"] for t in docs[0].metadata["found_by"]] == [0, 1]


def test_registry_name_and_fallback() -> None:
    base = WordRetriever(k=3)
    r = DecompositionRetriever(retriever=base, llm=lambda p: "I cannot help.", reranker="identity")
    docs = r.invoke("Apple profit 2023")
    assert base._queries == ["Apple profit 2023"]
    assert docs[0].id == "a"
    with pytest.raises(ValueError, match="reranker_kwargs"):
        DecompositionRetriever(retriever=base, reranker=KeywordReranker(), reranker_kwargs={"model": "x"})


async def test_async_runs_subquestion_retrievals_concurrently() -> None:
    base = WordRetriever(k=1, delay=0.05)
    r = DecompositionRetriever(retriever=base, llm=lambda p: SUBS, reranker=LengthReranker())
    docs = await r.ainvoke(QUESTION)
    assert base._peak == 4
    sync = DecompositionRetriever(retriever=WordRetriever(k=1), llm=lambda p: SUBS, reranker=LengthReranker())
    assert [(d.id, d.metadata["relevance_score"]) for d in docs] == [
        (d.id, d.metadata["relevance_score"]) for d in sync.invoke(QUESTION)
    ]


async def test_async_chat_model_is_awaited() -> None:
    model = FakeListChatModel(responses=[SUBS])
    docs = await DecompositionRetriever(retriever=WordRetriever(k=1), llm=model).ainvoke(QUESTION)
    assert [d.id for d in docs] == ["n", "a", "g"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fusion": "borda"}, "fusion"),
        ({"top_n": 0}, "top_n"),
        ({"top_n": True}, "top_n"),
        ({"top_n": "2"}, "top_n"),
        ({"top_n": 2.0}, "top_n"),
        ({"pool_size": True}, "pool_size"),
        ({"rrf_k": True}, "rrf_k"),
        ({"max_subquestions": True}, "max_subquestions"),
        ({"include_original": "false"}, "include_original"),
        ({"llm": 42}, "llm must be"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DecompositionRetriever(retriever=WordRetriever(), **kwargs)


@pytest.mark.parametrize("reranked", [False, True], ids=["fused", "reranked"])
@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_top_n_at_call_time_overrides_the_field_for_that_call(reranked: bool, run_async: bool) -> None:
    r = DecompositionRetriever(
        retriever=WordRetriever(k=1), llm=lambda p: SUBS, reranker=LengthReranker() if reranked else None, top_n=3
    )

    def call(**kwargs: Any) -> list[str]:
        docs = asyncio.run(r.ainvoke(QUESTION, **kwargs)) if run_async else r.invoke(QUESTION, **kwargs)
        return [d.id for d in docs]

    full = call()
    assert len(full) == 3
    assert call(top_n=1) == full[:1]
    assert call(top_n=2) == full[:2]
    assert r.top_n == 3


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"top_n": 0}, "top_n must be a positive int"),
        ({"top_n": True}, "top_n must be a positive int"),
        ({"top_n": "2"}, "top_n must be a positive int"),
        ({"k": 1}, "unexpected keyword argument.*'k'.*top_n="),
    ],
)
def test_bad_call_time_arguments(run_async: bool, kwargs: dict[str, Any], match: str) -> None:
    r = DecompositionRetriever(retriever=WordRetriever(k=1), llm=lambda p: SUBS)
    with pytest.raises(ValueError, match=match):
        asyncio.run(r.ainvoke(QUESTION, **kwargs)) if run_async else r.invoke(QUESTION, **kwargs)


class StoreRetriever(BaseRetriever):
    """Returns the same stored document objects on every call, as an in-memory store may."""

    store: list[Document] = Field(
        default_factory=lambda: [
            Document(id=i, page_content=t, metadata={"src": i, "nested": {"tags": [i]}}) for i, t in CORPUS.items()
        ]
    )

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return self.store


def test_returned_documents_are_deep_copies() -> None:
    base = StoreRetriever()
    before = [d.model_dump() for d in base.store]
    for reranker in (None, LengthReranker()):
        docs = DecompositionRetriever(retriever=base, llm=lambda p: SUBS, reranker=reranker).invoke(QUESTION)
        assert len(docs) == len(CORPUS)
        for d in docs:
            assert all(d is not s for s in base.store)
            d.metadata["nested"]["tags"].append("edited")
            d.metadata["src"] = "edited"
    assert [d.model_dump() for d in base.store] == before
