"""LangChain document compressors for every rerank-plugins strategy.

Example:
    >>> from langchain_rerank_plugins import PointwiseRerank
    >>> # retriever = ContextualCompressionRetriever(
    >>> #     base_compressor=PointwiseRerank(model="<model>", top_n=5), base_retriever=retriever)
"""

from langchain_rerank_plugins.compressors import (
    COMPRESSORS,
    AttentionRerank,
    CrossEncoderRerank,
    IdentityRerank,
    ListwiseRerank,
    PairwiseRerank,
    PointwiseRerank,
    RerankPluginsRerank,
    StrategyRerank,
)
from langchain_rerank_plugins.decomposition import DecompositionRetriever
from langchain_rerank_plugins.retrievers import FaissRetriever

# Explicit list: other modules of this package (retrievers) append their names here.
__all__ = [
    "COMPRESSORS",
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
