"""Both framework faces of decomposition give what the core pipeline gives for the same inputs.

The faces only convert framework objects and delegate to
:class:`rerank_plugins.decomposition.DecompositionRetriever`; here one word-overlap retriever is
offered three ways (a batch search function, a LangChain retriever, a LlamaIndex retriever) and
the three results must agree: ids, order, scores and the per-document trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from rerank_plugins.decomposition import Decomposer, DecompositionRetriever
from rerank_plugins.types import BaseReranker

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

CORPUS = {
    "seine": "The Seine flows through Paris",
    "capital": "Paris is the capital of France",
    "parisii": "The Parisii, a Celtic tribe of the Iron Age, founded the town that became Paris",
    "rome": "Rome is the capital of Italy",
}
SUBS = "1. capital of France\n2. river through Paris\n3. who founded Paris"
QUESTION = "Which river flows through the capital of France?"
K = 2

# one row of a face's result: id, score (rerank score, else fused), found_by, fused_score
Row = tuple[str, float | None, list[dict[str, Any]], float]


def _rank(query: str) -> list[tuple[str, float, str]]:
    """The top K of CORPUS by shared lower-case words: (id, score, text)."""
    words = set(query.lower().replace("?", "").split())
    scored = sorted(((len(words & set(t.lower().split())), i, t) for i, t in CORPUS.items()), key=lambda s: -s[0])
    return [(i, float(s), t) for s, i, t in scored][:K]


class LengthReranker(BaseReranker):
    """Longer text first: an order unlike retrieval's, so a skipped rerank shows."""

    name = "length"

    def score(self, query: str, documents: list[str]) -> list[float]:
        return [float(len(d)) for d in documents]


def _core(settings: dict[str, Any], run_async: bool) -> list[Row]:
    pipe = DecompositionRetriever(
        lambda queries, k: [_rank(q) for q in queries],
        decomposer=Decomposer(lambda p: SUBS),
        k=K,
        top_k=settings.pop("top_n"),
        **settings,
    )
    result = asyncio.run(pipe.aretrieve(QUESTION)) if run_async else pipe.retrieve(QUESTION)
    return [(d.id, d.score, d.trace(), d.fused_score) for d in result.documents]


def _langchain(settings: dict[str, Any], run_async: bool) -> list[Row]:
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from langchain_rerank_plugins import DecompositionRetriever as LangChainDecomposition

    class Words(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return [Document(id=i, page_content=t, metadata={"score": s}) for i, s, t in _rank(query)]

    face = LangChainDecomposition(retriever=Words(), llm=lambda p: SUBS, **settings)
    docs = asyncio.run(face.ainvoke(QUESTION)) if run_async else face.invoke(QUESTION)
    rows = []
    for d in docs:
        score = d.metadata.get("relevance_score", d.metadata["fused_score"])
        rows.append((d.id or "", score, d.metadata["found_by"], d.metadata["fused_score"]))
    return rows


def _llama_index(settings: dict[str, Any], run_async: bool) -> list[Row]:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.rerank_plugins import DecompositionRetriever as LlamaDecomposition

    class Words(BaseRetriever):
        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            return [NodeWithScore(node=TextNode(id_=i, text=t), score=s) for i, s, t in _rank(query_bundle.query_str)]

    face = LlamaDecomposition(Words(), llm=lambda p: SUBS, **settings)
    nodes = asyncio.run(face.aretrieve(QUESTION)) if run_async else face.retrieve(QUESTION)
    return [(n.node.node_id, n.score, n.node.metadata["found_by"], n.node.metadata["fused_score"]) for n in nodes]


FACES: dict[str, Callable[[dict[str, Any], bool], list[Row]]] = {"langchain": _langchain, "llama_index": _llama_index}


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("reranked", [False, True], ids=["fused", "reranked"])
@pytest.mark.parametrize("fusion", ["rrf", "max", "none"])
@pytest.mark.parametrize("face", sorted(FACES))
def test_each_face_ranks_as_the_core_pipeline(face: str, fusion: str, reranked: bool, run_async: bool) -> None:
    def settings() -> dict[str, Any]:
        reranker = LengthReranker() if reranked else None
        return {"reranker": reranker, "fusion": fusion, "rrf_k": 10, "pool_size": 2, "top_n": 2}

    want = _core(settings(), run_async=False)
    assert len(want) == 2 and len({r[0] for r in want}) == 2
    if reranked:  # pool_size shows: reranking the whole pool would pick other documents
        assert _core({**settings(), "pool_size": None}, run_async=False) != want
    assert FACES[face](settings(), run_async) == want


@pytest.mark.parametrize("face", sorted(FACES))
def test_a_backend_without_generation_fails_when_a_face_is_built(face: str) -> None:
    class ScoringOnly:
        name, capabilities = "scoring-only", frozenset({"prompts", "logits"})

    with pytest.raises(ValueError, match=r"decomposition .* text generation \('generate'\).*'scoring-only'"):
        if face == "langchain":
            from langchain_core.retrievers import BaseRetriever
            from langchain_rerank_plugins import DecompositionRetriever as LangChainDecomposition

            class Nothing(BaseRetriever):
                def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Any]:
                    return []

            LangChainDecomposition(retriever=Nothing(), llm=ScoringOnly())
        else:
            from llama_index.core.base.base_retriever import BaseRetriever
            from llama_index.postprocessor.rerank_plugins import DecompositionRetriever as LlamaDecomposition

            class Empty(BaseRetriever):
                def _retrieve(self, query_bundle: Any) -> list[Any]:
                    return []

            LlamaDecomposition(Empty(), llm=ScoringOnly())
