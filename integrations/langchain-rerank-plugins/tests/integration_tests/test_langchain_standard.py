"""LangChain's standard retriever tests (``langchain-tests``) for every retriever this package exports.

The index embeds with the real MiniLM; the decomposition retriever's sub-questions come from
LangChain's fake chat model, so no LLM weights are needed. langchain-tests has no standard
suite for document compressors (it covers chat models, embeddings, tools, retrievers, vector
stores, caches, stores, indexers and sandboxes), so the compressors have their own tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("faiss")
pytest.importorskip("langchain_tests", reason="pip install langchain-rerank-plugins[standard-tests]")

from langchain_core.language_models import FakeListChatModel
from langchain_core.retrievers import BaseRetriever
from langchain_rerank_plugins import DecompositionRetriever, FaissRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests

from rerank_plugins.retrieval import FaissIndex
from rerank_plugins.testing import KeywordReranker

pytestmark = [pytest.mark.integration]

TEXTS = [
    "FAISS is a library for efficient similarity search over dense vectors.",
    "A vector index stores embeddings and returns the nearest neighbours of a query.",
    "Sentence embeddings map a sentence to a fixed-size vector.",
    "Rerankers reorder retrieved passages with a stronger model.",
    "The Eiffel Tower is in Paris.",
    "Bread is made from flour, water, salt and yeast.",
    "Photosynthesis turns light into chemical energy in plants.",
    "The Pacific is the largest ocean on Earth.",
]
QUERY = "How does a vector index find similar embeddings?"
SUBQUESTIONS = "1. What is a vector index?\n2. How are sentence embeddings compared?"


@pytest.fixture(scope="module")
def minilm_index(minilm: Path) -> FaissIndex:
    return FaissIndex.build(TEXTS, ids=[f"t{i}" for i in range(len(TEXTS))], embedder=str(minilm))


class _WithIndex:
    """Hands the module's MiniLM index to the suite's constructor parameters."""

    index: FaissIndex

    @pytest.fixture(autouse=True)
    def _use_index(self, minilm_index: FaissIndex) -> None:
        self.index = minilm_index

    @property
    def retriever_query_example(self) -> str:
        return QUERY


class TestFaissRetrieverStandard(_WithIndex, RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return FaissRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"index": self.index}


class TestDecompositionRetrieverStandard(_WithIndex, RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return DecompositionRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"retriever": FaissRetriever(index=self.index, k=3), "llm": FakeListChatModel(responses=[SUBQUESTIONS])}

    @property
    def num_results_arg_name(self) -> str:
        return "top_n"


class TestRerankingDecompositionRetrieverStandard(TestDecompositionRetrieverStandard):
    """The same with a reranker, whose ``top_k`` is where ``top_n`` goes."""

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {**super().retriever_constructor_params, "reranker": KeywordReranker()}
