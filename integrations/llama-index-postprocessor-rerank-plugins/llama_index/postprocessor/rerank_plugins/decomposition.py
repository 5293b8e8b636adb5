"""Query decomposition as a LlamaIndex retriever: sub-questions, pooled retrieval, one rerank.

Wraps ANY LlamaIndex retriever (a vector index's ``as_retriever()``, BM25, ours). The pipeline is
:class:`rerank_plugins.decomposition.DecompositionRetriever`; this class only turns the wrapped
retriever into its batch search and the result back into nodes. Each returned node is a copy
carrying the trace in its metadata (``found_by``: every query that retrieved it, with rank and
score; ``fused_score``), kept out of the LLM and embedding text.

Example:
    >>> from llama_index.core.retrievers import BaseRetriever  # doctest: +SKIP
    >>> from llama_index.postprocessor.rerank_plugins import DecompositionRetriever  # doctest: +SKIP
    >>> retriever = DecompositionRetriever(  # doctest: +SKIP
    ...     index.as_retriever(similarity_top_k=10), llm=Settings.llm,
    ...     reranker="pointwise", reranker_kwargs={"model": "Qwen/Qwen2.5-0.5B-Instruct"}, top_n=5)
    >>> retriever.retrieve("Which company made more profit in 2023, NVIDIA or Apple?")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.llms import LLM
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from rerank_plugins.adapters import optional_reranker
from rerank_plugins.decomposition import (
    FOUND_BY_KEY,
    FUSED_SCORE_KEY,
    Decomposer,
    DecompositionResult,
    FrameworkLLM,
    FusionMethod,
    as_decomposer,
)
from rerank_plugins.decomposition import DecompositionRetriever as Pipeline
from rerank_plugins.types import Reranker, detached_metadata

__all__ = ["DecompositionRetriever", "decomposer_from_llm"]

_TRACE_KEYS = (FOUND_BY_KEY, FUSED_SCORE_KEY)


def _complete(llm: LLM, prompt: str) -> str:
    return llm.complete(prompt).text


async def _acomplete(llm: LLM, prompt: str) -> str:
    return (await llm.acomplete(prompt)).text


# A LlamaIndex LLM answers directly: no forced "1." prefix (that is for a backend's raw generation).
_LLAMA_LLM = FrameworkLLM(LLM, _complete, _acomplete, "a LlamaIndex LLM")


def decomposer_from_llm(llm: Any, **options: Any) -> Decomposer | None:
    """A :class:`Decomposer` for a LlamaIndex ``LLM`` (``complete`` / ``acomplete``), a ready
    Decomposer, a rerank-plugins core or model name, or a callable ``prompt -> text``; ``None`` passes.

    Example:
        >>> decomposer_from_llm(lambda prompt: "1. a b").decompose("q?").sub_questions
        ('a b',)
    """
    return as_decomposer(llm, framework_llm=_LLAMA_LLM, **options)


class _Search:
    """The wrapped retriever as the pipeline's batch search, for one call.

    The caller's own ``QueryBundle`` goes to the wrapped retriever for its query string (so
    ``custom_embedding_strs`` from a query transform such as HyDE still apply); every other query
    gets a new bundle. ``k`` is not used: each query's retrieval depth is the wrapped retriever's own.
    """

    def __init__(self, retriever: BaseRetriever, metadata_mode: MetadataMode, given: QueryBundle | None) -> None:
        self.retriever, self.metadata_mode, self.given = retriever, metadata_mode, given

    def _bundles(self, queries: list[str]) -> list[QueryBundle]:
        given = self.given
        return [given if given is not None and q == given.query_str else QueryBundle(q) for q in queries]

    def _ranking(self, nodes: Sequence[NodeWithScore]) -> list[tuple[str, float | None, str, NodeWithScore]]:
        return [(n.node.node_id, n.score, n.node.get_content(metadata_mode=self.metadata_mode), n) for n in nodes]

    def search(self, queries: list[str], k: int) -> list[list[tuple[str, float | None, str, NodeWithScore]]]:
        return [self._ranking(self.retriever.retrieve(b)) for b in self._bundles(queries)]

    async def asearch(self, queries: list[str], k: int) -> list[list[tuple[str, float | None, str, NodeWithScore]]]:
        results = await asyncio.gather(*(self.retriever.aretrieve(b) for b in self._bundles(queries)))
        return [self._ranking(nodes) for nodes in results]


class DecompositionRetriever(BaseRetriever):
    """Decompose the question, retrieve for it and every sub-question, fuse, rerank against the question.

    Args:
        retriever: any LlamaIndex retriever.
        llm: what writes the sub-questions: a LlamaIndex ``LLM``, a rerank-plugins core or model
            name (local generation), a :class:`~rerank_plugins.decomposition.Decomposer`, or a
            callable ``prompt -> text``. ``None``: no decomposition (retrieve, then rerank).
        reranker: registry name (``"pointwise"``, ``"listwise"``, ...) or a ready ``Reranker``;
            ``None`` returns the fused order.
        reranker_kwargs: options for a registry name (e.g. ``{"model": "<llm>"}``).
        top_n: nodes returned (``None``: all).
        similarity_top_k: LlamaIndex's name for ``top_n`` (as in ``QueryFusionRetriever``: the
            nodes returned after fusion); give one or the other. Each sub-question's retrieval
            depth is the wrapped retriever's own ``similarity_top_k``.
        pool_size: rerank only the first ``pool_size`` fused nodes (``None``: the whole pool).
        fusion: ``"rrf"`` (reciprocal rank fusion, default), ``"max"`` or ``"none"``.
        rrf_k: the RRF constant.
        max_subquestions: at most this many sub-questions (when ``llm`` is not a Decomposer).
        include_original: retrieve with the original question as well.
        decomposer_kwargs: more :class:`Decomposer` options (``prompt``, ``max_new_tokens``, ...).
        metadata_mode: which node metadata goes into the reranked text.
        callback_manager, verbose: as for any LlamaIndex retriever.

    ``retrieve`` / ``aretrieve`` take a string or a ``QueryBundle``; the wrapped retriever gets
    that bundle itself for the original question (so ``custom_embedding_strs`` from a query
    transform such as HyDE still apply) and a new bundle for each sub-question. ``aretrieve``
    runs the wrapped retriever's ``aretrieve`` for every query concurrently.

    Example:
        >>> from llama_index.core.schema import NodeWithScore, TextNode
        >>> class Fixed(BaseRetriever):
        ...     def _retrieve(self, qb):
        ...         return [NodeWithScore(node=TextNode(id_=w, text=w), score=1.0) for w in qb.query_str.split()[:1]]
        >>> r = DecompositionRetriever(Fixed(), llm=lambda p: "1. apple pie\\n2. pear tart")
        >>> [n.node.node_id for n in r.retrieve("fruit desserts")]
        ['fruit', 'apple', 'pear']
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        *,
        llm: Any = None,
        reranker: str | Reranker | None = None,
        reranker_kwargs: dict[str, Any] | None = None,
        top_n: int | None = None,
        similarity_top_k: int | None = None,
        pool_size: int | None = None,
        fusion: FusionMethod = "rrf",
        rrf_k: int = 60,
        max_subquestions: int = 3,
        include_original: bool = True,
        decomposer_kwargs: dict[str, Any] | None = None,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if not isinstance(retriever, BaseRetriever):
            raise ValueError(f"retriever must be a LlamaIndex BaseRetriever, got {type(retriever).__name__}")
        top_n, similarity_top_k = _count("top_n", top_n), _count("similarity_top_k", similarity_top_k)
        if top_n is not None and similarity_top_k is not None and top_n != similarity_top_k:
            raise ValueError(
                f"top_n and similarity_top_k are one setting (the nodes returned); got {top_n} and {similarity_top_k}"
            )
        self.retriever = retriever
        self.top_n = top_n if top_n is not None else similarity_top_k
        self.pool_size = pool_size
        self.fusion: FusionMethod = fusion
        self.rrf_k = rrf_k
        self.include_original = include_original
        self.metadata_mode = metadata_mode
        self.decomposer: Decomposer | None = None
        self.reranker: Reranker | None = None
        self._pipeline(None)  # the pipeline checks the settings, before any model is loaded
        options = dict(decomposer_kwargs or {})
        if not isinstance(llm, Decomposer):
            options.setdefault("max_subquestions", max_subquestions)
        self.decomposer = decomposer_from_llm(llm, **options)
        self.reranker = optional_reranker(reranker, reranker_kwargs or {})
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @property
    def top_n(self) -> int | None:
        """Nodes returned (``None``: all)."""
        return self._top_n

    @top_n.setter
    def top_n(self, value: int | None) -> None:
        self._top_n = _count("top_n", value)

    @property
    def similarity_top_k(self) -> int | None:
        """LlamaIndex's name for :attr:`top_n`."""
        return self._top_n

    @similarity_top_k.setter
    def similarity_top_k(self, value: int | None) -> None:
        self._top_n = _count("similarity_top_k", value)

    @property
    def pool_size(self) -> int | None:
        """Rerank only the first ``pool_size`` fused nodes (``None``: the whole pool)."""
        return self._pool_size

    @pool_size.setter
    def pool_size(self, value: int | None) -> None:
        self._pool_size = _count("pool_size", value)

    def _pipeline(self, query_bundle: QueryBundle | None) -> Pipeline:
        return Pipeline(
            _Search(self.retriever, self.metadata_mode, query_bundle),
            decomposer=self.decomposer,
            reranker=self.reranker,
            fusion=self.fusion,
            rrf_k=self.rrf_k,
            pool_size=self.pool_size,
            top_k=self.top_n,
            include_original=self.include_original,
        )

    @staticmethod
    def _nodes(result: DecompositionResult) -> list[NodeWithScore]:
        nodes = []
        for doc in result.documents:
            # a copy: the wrapped retriever's nodes (often a docstore's own) stay untouched
            src = doc.payload.node
            node = src.model_copy(update={"metadata": detached_metadata(src.metadata)})
            node.metadata.update(doc.trace_metadata())
            node.excluded_llm_metadata_keys = _with(node.excluded_llm_metadata_keys)
            node.excluded_embed_metadata_keys = _with(node.excluded_embed_metadata_keys)
            nodes.append(NodeWithScore(node=node, score=doc.score))
        return nodes

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._nodes(self._pipeline(query_bundle).retrieve(query_bundle.query_str))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._nodes(await self._pipeline(query_bundle).aretrieve(query_bundle.query_str))


def _count(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    return value


def _with(keys: list[str]) -> list[str]:
    return [*keys, *(k for k in _TRACE_KEYS if k not in keys)]
