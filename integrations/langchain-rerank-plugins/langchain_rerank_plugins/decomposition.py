"""Query decomposition as a LangChain retriever: sub-questions, pooled retrieval, one rerank.

Wraps ANY LangChain retriever (a vector store's ``as_retriever()``, BM25, ours). Parsing,
fusion and reranking live in :mod:`rerank_plugins.decomposition`; this class only converts
documents to strings and back. Each returned document is a copy whose metadata carries the
trace (``found_by``: every query that retrieved it, with rank and score; ``fused_score``) and,
when reranked, ``relevance_score``.

Example:
    >>> from langchain_rerank_plugins import DecompositionRetriever  # doctest: +SKIP
    >>> retriever = DecompositionRetriever(  # doctest: +SKIP
    ...     retriever=vectorstore.as_retriever(search_kwargs={"k": 10}), llm=chat_model,
    ...     reranker="pointwise", reranker_kwargs={"model": "Qwen/Qwen2.5-0.5B-Instruct"}, top_n=5)
    >>> retriever.invoke("Which company made more profit in 2023, NVIDIA or Apple?")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseLanguageModel
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr

from langchain_rerank_plugins._call_time import result_count
from rerank_plugins import registry
from rerank_plugins.decomposition import (
    Decomposer,
    Decomposition,
    PooledDocument,
    arerank_pool,
    fuse,
    query_list,
    rerank_pool,
)
from rerank_plugins.types import Reranker, detached_metadata

__all__ = ["DecompositionRetriever", "decomposer_from_llm"]

RELEVANCE_SCORE_KEY = "relevance_score"
FOUND_BY_KEY = "found_by"
FUSED_SCORE_KEY = "fused_score"


def _text(message: Any) -> str:
    """The text of a chat model message or an LLM string (content blocks joined)."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [b if isinstance(b, str) else b.get("text", "") for b in content if isinstance(b, (str, dict))]
        return "".join(p for p in parts if isinstance(p, str))
    return content  # type: ignore[no-any-return]  # not text: the Decomposer flags the fallback


def decomposer_from_llm(llm: Any, **options: Any) -> Decomposer | None:
    """A :class:`Decomposer` for a LangChain chat model or LLM (``invoke`` / ``ainvoke``), a ready
    Decomposer, a rerank-plugins core or model name, or a callable ``prompt -> text``; ``None`` passes.

    Example:
        >>> decomposer_from_llm(lambda prompt: "1. a b").decompose("q?").sub_questions
        ('a b',)
    """
    if llm is None or isinstance(llm, Decomposer):
        if options and llm is not None:
            raise ValueError("decomposer_kwargs apply to an LLM, not to a ready Decomposer")
        return llm
    if isinstance(llm, BaseLanguageModel):

        def complete(prompt: str) -> str:
            return _text(llm.invoke(prompt))

        async def acomplete(prompt: str) -> str:
            return _text(await llm.ainvoke(prompt))

        return Decomposer(complete, acomplete=acomplete, **options)
    if isinstance(llm, (str, os.PathLike)) or callable(llm) or type(llm).__name__ == "ScoringCore":
        return Decomposer(llm, **options)
    raise ValueError(
        "llm must be a LangChain chat model or LLM, a Decomposer, a rerank-plugins core or model name, "
        f"or a callable prompt -> text; got {type(llm).__name__}"
    )


def _score(doc: Document) -> float | None:
    # Vector-store retrievers put a similarity in metadata["score"] (ours does); others nothing.
    score = doc.metadata.get("score")
    return float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None


def document_key(doc: Document) -> str:
    """Deduplication key: ``doc.id``, else ``metadata["id"]``, else a hash of the text."""
    if doc.id:
        return str(doc.id)
    if doc.metadata.get("id") is not None:
        return str(doc.metadata["id"])
    return "sha1:" + hashlib.sha1(doc.page_content.encode("utf-8")).hexdigest()


class DecompositionRetriever(BaseRetriever):
    """Decompose the question, retrieve for it and every sub-question, fuse, rerank against the question.

    ``invoke`` sends the queries through ``retriever.batch`` (concurrent where the retriever
    allows); ``ainvoke`` gathers ``retriever.ainvoke`` calls concurrently. ``invoke(query, top_n=3)``
    (or ``ainvoke``) overrides ``top_n`` for one call; any other call-time keyword is a ``ValueError``
    (the depth of each sub-question's retrieval belongs to the wrapped retriever).

    Example:
        >>> class Fixed(BaseRetriever):
        ...     def _get_relevant_documents(self, query, *, run_manager):
        ...         return [Document(page_content=w, id=w) for w in query.split()[:1]]
        >>> r = DecompositionRetriever(retriever=Fixed(), llm=lambda p: "1. apple pie\\n2. pear tart")
        >>> [d.id for d in r.invoke("fruit desserts")]
        ['fruit', 'apple', 'pear']
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    retriever: BaseRetriever = Field(description="Any LangChain retriever.")
    llm: Any = Field(
        default=None,
        description="Writes the sub-questions: a LangChain chat model or LLM, a rerank-plugins core or model "
        "name (local generation), a Decomposer, or a callable prompt -> text. None: no decomposition.",
    )
    reranker: str | Reranker | None = Field(
        default=None, description="Registry name or Reranker; None returns the fused order."
    )
    reranker_kwargs: dict[str, Any] = Field(default_factory=dict, description="Options for a registry name.")
    # strict numbers and flags: True, "2" and 2.0 are mistakes, not counts
    top_n: int | None = Field(
        default=None, ge=1, strict=True, description="Documents returned, None keeps all; invoke(q, top_n=n) overrides."
    )
    pool_size: int | None = Field(
        default=None, ge=1, strict=True, description="Rerank only the first pool_size fused documents."
    )
    fusion: Literal["rrf", "max", "none"] = Field(default="rrf", description="How rankings are merged.")
    rrf_k: float = Field(default=60, ge=0, strict=True, description="The reciprocal rank fusion constant.")
    max_subquestions: int = Field(default=3, ge=1, strict=True, description="At most this many sub-questions.")
    include_original: bool = Field(
        default=True, strict=True, description="Retrieve with the original question as well."
    )
    decomposer_kwargs: dict[str, Any] = Field(default_factory=dict, description="More Decomposer options.")

    _decomposer: Decomposer | None = PrivateAttr(default=None)
    _reranker: Reranker | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        options = dict(self.decomposer_kwargs)
        if not isinstance(self.llm, Decomposer):
            options.setdefault("max_subquestions", self.max_subquestions)
        self._decomposer = decomposer_from_llm(self.llm, **options)
        if isinstance(self.reranker, str):
            self._reranker = registry.create(self.reranker, **self.reranker_kwargs)
        else:
            if self.reranker_kwargs:
                raise ValueError("reranker_kwargs apply to a registry name, not a Reranker instance")
            self._reranker = self.reranker

    @property
    def decomposer(self) -> Decomposer | None:
        """The decomposer built from ``llm``."""
        return self._decomposer

    @staticmethod
    def _items(docs: Sequence[Document]) -> list[tuple[str, Any, str, Document]]:
        return [(document_key(d), _score(d), d.page_content, d) for d in docs]

    def _to_document(self, doc: PooledDocument) -> Document:
        # The base retriever's documents stay untouched.
        copy: Document = doc.payload.model_copy(update={"metadata": detached_metadata(doc.payload.metadata)})
        copy.metadata.update({FOUND_BY_KEY: doc.trace(), FUSED_SCORE_KEY: doc.fused_score})
        if doc.rerank_score is not None:
            copy.metadata[RELEVANCE_SCORE_KEY] = doc.rerank_score
        return copy

    def _pool(self, queries: list[str], results: Sequence[Sequence[Document]]) -> list[PooledDocument]:
        return fuse([self._items(r) for r in results], queries=queries, method=self.fusion, rrf_k=self.rrf_k)

    def _top_n(self, top_n: int | None, kwargs: dict[str, Any]) -> int | None:
        return result_count("top_n", top_n, self.top_n, kwargs, type(self).__name__)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, top_n: int | None = None, **kwargs: Any
    ) -> list[Document]:
        top_n = self._top_n(top_n, kwargs)
        dec = self._decomposer.decompose(query) if self._decomposer else Decomposition.trivial(query)
        queries = query_list(dec, include_original=self.include_original)
        results = self.retriever.batch(queries, config={"callbacks": run_manager.get_child()})
        pool = self._pool(queries, results)
        if self._reranker is not None and pool:
            docs = rerank_pool(query, pool, self._reranker, top_k=top_n, pool_size=self.pool_size)
        else:
            docs = pool[:top_n] if top_n else pool
        return [self._to_document(d) for d in docs]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, top_n: int | None = None, **kwargs: Any
    ) -> list[Document]:
        top_n = self._top_n(top_n, kwargs)
        dec = await self._decomposer.adecompose(query) if self._decomposer else Decomposition.trivial(query)
        queries = query_list(dec, include_original=self.include_original)
        callbacks = run_manager.get_child()
        results = await asyncio.gather(*(self.retriever.ainvoke(q, config={"callbacks": callbacks}) for q in queries))
        pool = self._pool(queries, results)
        if self._reranker is not None and pool:
            docs = await arerank_pool(query, pool, self._reranker, top_k=top_n, pool_size=self.pool_size)
        else:
            docs = pool[:top_n] if top_n else pool
        return [self._to_document(d) for d in docs]
