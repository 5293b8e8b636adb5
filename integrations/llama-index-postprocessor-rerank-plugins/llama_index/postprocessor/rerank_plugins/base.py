"""LlamaIndex node postprocessors over rerank-plugins strategies.

Each class converts nodes to plain strings, calls a :class:`rerank_plugins.types.Reranker`
once (through :func:`rerank_plugins.fusion.rank_documents`, with the nodes' scores as the
retrieval scores), and maps the results back to nodes: ``node.score`` is the ranking score (the
reranker's, or the fused one with ``fusion``), and the metadata gain ``rerank_score`` (the
reranker's own), ``rerank_relevance`` (normalised, in [0, 1]) and ``retrieval_score`` (the
previous node score), all kept out of the LLM and embedding text. Scoring, batching and model
loading live in ``rerank_plugins``; the model behind a strategy comes from the shared scoring
core, so two postprocessors naming the same model share one loaded model. A strategy's options
are typed fields of its postprocessor (its options model is a base class);
``StrategyRerank.for_strategy`` gives the class of any registered strategy, plugins included.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from llama_index.core.bridge.pydantic import ConfigDict, Field
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from rerank_plugins.adapters import AdapterFields, NamedRerankerFields, StrategyFace, score_metadata
from rerank_plugins.fusion import RankedDocument
from rerank_plugins.rerankers.attention import AttentionOptions
from rerank_plugins.rerankers.cross_encoder import CrossEncoderOptions
from rerank_plugins.rerankers.listwise import ListwiseOptions
from rerank_plugins.rerankers.pairwise import PairwiseOptions
from rerank_plugins.rerankers.pointwise import PointwiseOptions
from rerank_plugins.types import detached_metadata

__all__ = [
    "POSTPROCESSORS",
    "AttentionRerank",
    "CrossEncoderRerank",
    "IdentityRerank",
    "ListwiseRerank",
    "PairwiseRerank",
    "PointwiseRerank",
    "RerankPluginsRerank",
    "StrategyRerank",
]

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

RETRIEVAL_SCORE_KEY = "retrieval_score"

#: registry name -> postprocessor class; filled by ``StrategyRerank`` subclasses
POSTPROCESSORS: dict[str, type[StrategyRerank]] = {}


class _RerankBase(AdapterFields, BaseNodePostprocessor):
    """Shared fields and the convert -> rerank -> map-back path; not used directly."""

    # frozen=False: a strategy's options model (a base of each strategy class) is frozen
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", frozen=False)

    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Which node metadata goes into the text that is reranked."
    )
    keep_retrieval_score: bool = Field(
        default=True,
        strict=True,
        description=f'Keep the previous node score in metadata["{RETRIEVAL_SCORE_KEY}"].',
    )

    @classmethod
    def class_name(cls) -> str:
        return cls.__name__

    def _model_name(self) -> str:
        return self.model or type(self._reranker).__name__

    def _query(self, query_bundle: QueryBundle | None) -> str:
        if query_bundle is None:
            raise ValueError(f"{self.class_name()} needs a query: pass query_bundle or query_str")
        return query_bundle.query_str

    def _texts(self, nodes: Sequence[NodeWithScore]) -> list[str]:
        return [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]

    def _map_back(self, nodes: Sequence[NodeWithScore], ranked: list[RankedDocument]) -> list[NodeWithScore]:
        out = []
        for doc in ranked:
            old = nodes[doc.index]
            # Editing a returned node's (nested) metadata never reaches the caller's nodes, which
            # often belong to a docstore.
            node = old.node.model_copy(update={"metadata": detached_metadata(old.node.metadata)})
            added: dict[str, float | None] = dict(score_metadata(doc))
            if self.keep_retrieval_score:
                added[RETRIEVAL_SCORE_KEY] = None if old.score is None else float(old.score)
            node.metadata.update(added)
            # the scores stay out of the LLM and embedding text
            node.excluded_llm_metadata_keys = _with(node.excluded_llm_metadata_keys, added)
            node.excluded_embed_metadata_keys = _with(node.excluded_embed_metadata_keys, added)
            out.append(NodeWithScore(node=node, score=doc.score))
        return out

    @staticmethod
    def _retrieval_scores(nodes: Sequence[NodeWithScore]) -> list[float | None]:
        return [n.score for n in nodes]

    def _start(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> str:
        query = self._query(query_bundle)
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle,
                nodes=nodes,
                top_n=self.top_n or len(nodes),
                model_name=self._model_name(),
            )
        )
        return query

    def _payload(self, nodes: list[NodeWithScore], query: str) -> dict[str, Any]:
        return {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self._model_name(),
            EventPayload.QUERY_STR: query,
            EventPayload.TOP_K: self.top_n,
        }

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = self._start(nodes, query_bundle)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query)) as ev:
            ranked = self._rank(query, self._texts(nodes), self._retrieval_scores(nodes))
            new_nodes = self._map_back(nodes, ranked)
            ev.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = self._start(nodes, query_bundle)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query)) as ev:
            ranked = await self._arank(query, self._texts(nodes), self._retrieval_scores(nodes))
            new_nodes = self._map_back(nodes, ranked)
            ev.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes


def _with(keys: list[str], added: dict[str, Any]) -> list[str]:
    return [*keys, *(k for k in added if k not in keys)]


class RerankPluginsRerank(NamedRerankerFields, _RerankBase):
    """Rerank nodes with any rerank-plugins strategy: a registry name or a ready ``Reranker``.

    Example:
        >>> from llama_index.core.schema import NodeWithScore, TextNode
        >>> pp = RerankPluginsRerank(reranker="identity", top_n=1)
        >>> [n.node.text for n in pp.postprocess_nodes(
        ...     [NodeWithScore(node=TextNode(text="a"), score=0.3)], query_str="q")]
        ['a']
    """

    def _model_name(self) -> str:
        if self.model is None and isinstance(self.reranker, str):
            return self.reranker
        return super()._model_name()


class StrategyRerank(StrategyFace, _RerankBase):
    """Base of the one-per-strategy postprocessors; a subclass names its strategy and options.

    A strategy is one line (its options model first, so its fields are typed fields here)::

        class MyRerank(MyOptions, StrategyRerank, strategy="my-strategy"): ...

    ``StrategyRerank.for_strategy("name")`` makes that class for any registered strategy.
    """

    face: ClassVar[str] = "LlamaIndex node postprocessor"
    classes: ClassVar[dict[str, type]] = POSTPROCESSORS  # type: ignore[assignment]

    def _model_name(self) -> str:
        return self.model or self.strategy


class IdentityRerank(StrategyRerank, strategy="identity"): ...


class PointwiseRerank(PointwiseOptions, StrategyRerank, strategy="pointwise"): ...


class ListwiseRerank(ListwiseOptions, StrategyRerank, strategy="listwise"): ...


class PairwiseRerank(PairwiseOptions, StrategyRerank, strategy="pairwise"): ...


class AttentionRerank(AttentionOptions, StrategyRerank, strategy="attention"): ...


class CrossEncoderRerank(CrossEncoderOptions, StrategyRerank, strategy="cross-encoder"): ...
