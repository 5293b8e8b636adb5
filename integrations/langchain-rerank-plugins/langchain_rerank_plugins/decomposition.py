"""Query decomposition as a LangChain retriever: sub-questions, pooled retrieval, one rerank.

Wraps ANY LangChain retriever (a vector store's ``as_retriever()``, BM25, ours). The pipeline is
:class:`rerank_plugins.decomposition.DecompositionRetriever`; this class only turns the wrapped
retriever into its batch search and the result back into documents. Each returned document is a
copy whose metadata carries the trace (``found_by``: every query that retrieved it, with rank
and score; ``fused_score``) and, when reranked, ``relevance_score``.

Example:
    >>> from langchain_rerank_plugins import DecompositionRetriever  # doctest: +SKIP
    >>> retriever = DecompositionRetriever(  # doctest: +SKIP
    ...     retriever=vectorstore.as_retriever(search_kwargs={"k": 10}), llm=chat_model,
    ...     reranker="pointwise", reranker_kwargs={"model": "Qwen/Qwen2.5-0.5B-Instruct"}, top_n=5)
    >>> retriever.invoke("Which company made more profit in 2023, NVIDIA or Apple?")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseLanguageModel
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr

from langchain_rerank_plugins._call_time import result_count
from langchain_rerank_plugins.compressors import RELEVANCE_SCORE_KEY
from rerank_plugins.adapters import optional_reranker
from rerank_plugins.decomposition import Decomposer, DecompositionResult, FrameworkLLM, as_decomposer
from rerank_plugins.decomposition import DecompositionRetriever as Pipeline
from rerank_plugins.types import Reranker, detached_metadata

__all__ = ["DecompositionRetriever", "decomposer_from_llm"]


def _text(message: Any) -> str:
    """The text of a chat model message or an LLM string (content blocks joined)."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [b if isinstance(b, str) else b.get("text", "") for b in content if isinstance(b, (str, dict))]
        return "".join(p for p in parts if isinstance(p, str))
    return content  # type: ignore[no-any-return]  # not text: the Decomposer flags the fallback


def _invoke(llm: BaseLanguageModel, prompt: str) -> str:
    return _text(llm.invoke(prompt))


async def _ainvoke(llm: BaseLanguageModel, prompt: str) -> str:
    return _text(await llm.ainvoke(prompt))


_CHAT_MODEL = FrameworkLLM(BaseLanguageModel, _invoke, _ainvoke, "a LangChain chat model or LLM")


def decomposer_from_llm(llm: Any, **options: Any) -> Decomposer | None:
    """A :class:`Decomposer` for a LangChain chat model or LLM (``invoke`` / ``ainvoke``), a ready
    Decomposer, a rerank-plugins core or model name, or a callable ``prompt -> text``; ``None`` passes.

    Example:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> decomposer_from_llm(FakeListChatModel(responses=["1. a b"])).decompose("q?").sub_questions
        ('a b',)
    """
    return as_decomposer(llm, framework_llm=_CHAT_MODEL, **options)


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


class _Search:
    """The wrapped retriever as the pipeline's batch search, for one call (its callbacks).

    ``k`` is not used: the depth of each query's retrieval is the wrapped retriever's own.
    """

    def __init__(self, retriever: BaseRetriever, callbacks: Any) -> None:
        self.retriever = retriever
        self.config: Any = {"callbacks": callbacks}

    @staticmethod
    def _ranking(docs: Sequence[Document]) -> list[tuple[str, float | None, str, Document]]:
        return [(document_key(d), _score(d), d.page_content, d) for d in docs]

    def search(self, queries: list[str], k: int) -> list[list[tuple[str, float | None, str, Document]]]:
        return [self._ranking(docs) for docs in self.retriever.batch(queries, config=self.config)]

    async def asearch(self, queries: list[str], k: int) -> list[list[tuple[str, float | None, str, Document]]]:
        return [self._ranking(docs) for docs in await self.retriever.abatch(queries, config=self.config)]


class DecompositionRetriever(BaseRetriever):
    """Decompose the question, retrieve for it and every sub-question, fuse, rerank against the question.

    ``invoke`` sends the queries through ``retriever.batch`` (concurrent where the retriever
    allows); ``ainvoke`` through ``retriever.abatch`` (concurrent ``ainvoke`` calls).
    ``invoke(query, top_n=3)`` (or ``ainvoke``) overrides ``top_n`` for one call; any other
    call-time keyword is a ``ValueError`` (the depth of each sub-question's retrieval belongs to
    the wrapped retriever).

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
        self._reranker = optional_reranker(self.reranker, self.reranker_kwargs)

    @property
    def decomposer(self) -> Decomposer | None:
        """The decomposer built from ``llm``."""
        return self._decomposer

    def _pipeline(self, callbacks: Any, top_n: int | None, kwargs: dict[str, Any]) -> Pipeline:
        return Pipeline(
            _Search(self.retriever, callbacks),
            decomposer=self._decomposer,
            reranker=self._reranker,
            fusion=self.fusion,
            rrf_k=self.rrf_k,
            pool_size=self.pool_size,
            top_k=result_count("top_n", top_n, self.top_n, kwargs, type(self).__name__),
            include_original=self.include_original,
        )

    @staticmethod
    def _documents(result: DecompositionResult) -> list[Document]:
        documents = []
        for doc in result.documents:
            # a copy: the wrapped retriever's documents stay untouched
            copy: Document = doc.payload.model_copy(update={"metadata": detached_metadata(doc.payload.metadata)})
            copy.metadata.update(doc.trace_metadata())
            if doc.rerank_score is not None:
                copy.metadata[RELEVANCE_SCORE_KEY] = doc.rerank_score
            documents.append(copy)
        return documents

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, top_n: int | None = None, **kwargs: Any
    ) -> list[Document]:
        pipeline = self._pipeline(run_manager.get_child(), top_n, kwargs)
        return self._documents(pipeline.retrieve(query))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, top_n: int | None = None, **kwargs: Any
    ) -> list[Document]:
        pipeline = self._pipeline(run_manager.get_child(), top_n, kwargs)
        return self._documents(await pipeline.aretrieve(query))
