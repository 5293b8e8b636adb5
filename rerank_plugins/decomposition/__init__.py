"""Query decomposition: sub-questions, pooled retrieval, one rerank against the original question.

A multi-hop question ("Which company among NVIDIA, Apple and Google made the biggest profit in
2023?") has its evidence spread over several documents; one query embedding finds only part of
it. The pipeline, one module a step:

1. :mod:`~rerank_plugins.decomposition.decomposer`: :class:`Decomposer` asks an LLM for at most
   ``max_subquestions`` sub-questions; :mod:`~rerank_plugins.decomposition.parsing` reads
   whatever comes back (:func:`parse_subquestions`: numbered lists, bullets, JSON, plain lines,
   code fences, chatter). Bad model output never raises: an empty or unusable answer falls back
   to the original question, flagged in the :class:`Decomposition`.
2. The original question and every sub-question are sent to a retriever (one batched call, or
   concurrent calls in :meth:`DecompositionRetriever.aretrieve`).
3. :mod:`~rerank_plugins.decomposition.fusion`: :func:`fuse` merges the rankings (reciprocal
   rank fusion by default), deduplicates by document id and keeps a per-document trace of which
   query found it at which rank (:class:`Provenance`).
4. :func:`rerank_pool` reranks the pool against the ORIGINAL question with any
   :class:`~rerank_plugins.types.Reranker`.

:mod:`~rerank_plugins.decomposition.pipeline`: :class:`DecompositionRetriever` chains the four
steps over any retriever with a batched ``search(queries, k)``. The LlamaIndex and LangChain
faces live in the integration packages and delegate to it.

Example:
    >>> from rerank_plugins.decomposition import Decomposer, DecompositionRetriever
    >>> from rerank_plugins.testing import KeywordReranker
    >>> docs = {"n": "NVIDIA profit 2023 was 30B", "a": "Apple profit 2023 was 97B", "x": "Apples are red"}
    >>> def search(queries, k):  # any batched retriever: list of queries -> rankings
    ...     return [sorted(((i, float(sum(w in t.lower() for w in q.lower().split())), t)
    ...                     for i, t in docs.items()), key=lambda r: -r[1])[:k] for q in queries]
    >>> llm = lambda prompt: "1. NVIDIA profit 2023\\n2. Apple profit 2023"
    >>> pipe = DecompositionRetriever(search, decomposer=Decomposer(llm), reranker=KeywordReranker(), k=2)
    >>> result = pipe.retrieve("Which made more profit in 2023, NVIDIA or Apple?")
    >>> result.decomposition.sub_questions
    ('NVIDIA profit 2023', 'Apple profit 2023')
    >>> sorted(d.id for d in result.documents)
    ['a', 'n']
"""

from __future__ import annotations

from rerank_plugins.decomposition.decomposer import (
    DEFAULT_PROMPT,
    Decomposer,
    Decomposition,
    FrameworkLLM,
    as_decomposer,
    query_list,
)
from rerank_plugins.decomposition.fusion import (
    FOUND_BY_KEY,
    FUSED_SCORE_KEY,
    FusionMethod,
    PooledDocument,
    Provenance,
    arerank_pool,
    fuse,
    rerank_pool,
)
from rerank_plugins.decomposition.parsing import normalize_question, parse_subquestions
from rerank_plugins.decomposition.pipeline import (
    BatchRetriever,
    DecompositionResult,
    DecompositionRetriever,
    as_batch_retriever,
)

__all__ = [
    "DEFAULT_PROMPT",
    "FOUND_BY_KEY",
    "FUSED_SCORE_KEY",
    "BatchRetriever",
    "Decomposer",
    "Decomposition",
    "DecompositionResult",
    "DecompositionRetriever",
    "FrameworkLLM",
    "FusionMethod",
    "PooledDocument",
    "Provenance",
    "arerank_pool",
    "as_batch_retriever",
    "as_decomposer",
    "fuse",
    "normalize_question",
    "parse_subquestions",
    "query_list",
    "rerank_pool",
]
