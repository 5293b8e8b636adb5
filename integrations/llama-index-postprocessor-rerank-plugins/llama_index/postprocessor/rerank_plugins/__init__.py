"""LlamaIndex node postprocessors for every rerank-plugins strategy.

Example:
    >>> from llama_index.postprocessor.rerank_plugins import PointwiseRerank
    >>> # query_engine = index.as_query_engine(
    >>> #     similarity_top_k=20, node_postprocessors=[PointwiseRerank(model="<model>", top_n=5)])
"""

from llama_index.postprocessor.rerank_plugins.base import (
    POSTPROCESSORS,
    AttentionRerank,
    CrossEncoderRerank,
    IdentityRerank,
    ListwiseRerank,
    PairwiseRerank,
    PointwiseRerank,
    RerankPluginsRerank,
    StrategyRerank,
)
from llama_index.postprocessor.rerank_plugins.decomposition import DecompositionRetriever
from llama_index.postprocessor.rerank_plugins.retrievers import FaissRetriever

# Explicit list: other modules of this package (retrievers) append their names here.
__all__ = [
    "POSTPROCESSORS",
    "AttentionRerank",
    "CrossEncoderRerank",
    "DecompositionRetriever",
    "FaissRetriever",
    "IdentityRerank",
    "ListwiseRerank",
    "PairwiseRerank",
    "PointwiseRerank",
    "RerankPluginsRerank",
    "StrategyRerank",
]
