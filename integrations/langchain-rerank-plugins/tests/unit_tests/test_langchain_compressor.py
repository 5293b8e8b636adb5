"""LangChain-specific behaviour (the framework-neutral contract is tests/contract/test_adapter_contract.py)."""

from __future__ import annotations

import asyncio

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_rerank_plugins import COMPRESSORS, RerankPluginsRerank

from rerank_plugins.testing import KeywordReranker

DOCS = ["red apple pie recipe", "blue sky at noon", "green apple", "red apple orchard"]


def _retriever(top_n: int = 2) -> ContextualCompressionRetriever:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents([Document(page_content=t, id=f"d{i}", metadata={"i": i}) for i, t in enumerate(DOCS)])
    return ContextualCompressionRetriever(
        base_compressor=RerankPluginsRerank(reranker=KeywordReranker(), top_n=top_n),
        base_retriever=store.as_retriever(search_kwargs={"k": 4}),
    )


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_inside_contextual_compression_retriever(run_async: bool) -> None:
    retriever = _retriever()
    q = "red apple orchard"
    docs = asyncio.run(retriever.ainvoke(q)) if run_async else retriever.invoke(q)
    # keyword scores of the four retrieved documents: 3 (d3), 2 (d0), 1, 0; relevance is min-max
    assert [(d.id, d.page_content, d.metadata) for d in docs] == [
        ("d3", "red apple orchard", {"i": 3, "relevance_score": 3.0, "rerank_score": 3.0, "rerank_relevance": 1.0}),
        ("d0", "red apple pie recipe",
         {"i": 0, "relevance_score": 2.0, "rerank_score": 2.0, "rerank_relevance": pytest.approx(2 / 3)}),
    ]


def test_in_an_lcel_chain() -> None:
    """retriever | format -> prompt -> chat model: the prompt holds the reranked documents in order."""
    seen: list[str] = []

    def show(prompt_value: object) -> object:
        seen.append(prompt_value.to_string())  # type: ignore[attr-defined]
        return prompt_value

    prompt = ChatPromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}")
    chain = (
        {
            "context": _retriever() | (lambda docs: "\n".join(d.page_content for d in docs)),
            "question": RunnablePassthrough(),
        }
        | prompt
        | RunnableLambda(show)
        | FakeListChatModel(responses=["an orchard"])
        | StrOutputParser()
    )
    assert chain.invoke("red apple orchard") == "an orchard"
    assert seen == ["Human: Context:\nred apple orchard\nred apple pie recipe\n\nQuestion: red apple orchard"]


def test_compressor_as_a_runnable_step() -> None:
    """The compressor used directly in a chain step, without ContextualCompressionRetriever."""
    compressor = RerankPluginsRerank(reranker=KeywordReranker(), top_n=1)
    step = RunnableLambda(
        lambda x: compressor.compress_documents(x["docs"], x["query"]),
        afunc=lambda x: compressor.acompress_documents(x["docs"], x["query"]),
    )
    payload = {"docs": [Document(t) for t in DOCS], "query": "green apple"}
    assert [d.page_content for d in step.invoke(payload)] == ["green apple"]
    assert [d.page_content for d in asyncio.run(step.ainvoke(payload))] == ["green apple"]


def test_extra_fields_forbidden_and_described() -> None:
    for cls in [*COMPRESSORS.values(), RerankPluginsRerank]:
        assert cls.model_config["extra"] == "forbid"
        for name in cls.model_fields:  # strategy options too
            assert cls.model_fields[name].description, (cls.__name__, name)
    assert RerankPluginsRerank.model_fields["reranker_kwargs"].description
