"""FAISS retrieval: an embedded vector index over texts, with sentence-transformers embedders.

Needs the ``faiss`` extra: ``pip install "rerank-plugins[faiss]"``. FAISS is imported only
when an index is created or loaded.

Example:
    >>> from rerank_plugins.retrieval import HashingEmbedder, index_documents
    >>> index = index_documents(["red fox", "blue whale"], embedder=HashingEmbedder(32))
    >>> [(r.id, r.text) for r in index.search("whale", k=1)]
    [('1', 'blue whale')]
"""

from __future__ import annotations

from rerank_plugins.retrieval._optional import FAISS_HINT, import_faiss
from rerank_plugins.retrieval.documents import (
    DEFAULT_PATTERNS,
    TextDocument,
    index_documents,
    index_folder,
    load_folder,
    load_jsonl,
)
from rerank_plugins.retrieval.embedder import (
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    embedder_from_spec,
    get_embedder,
)
from rerank_plugins.retrieval.index import FaissIndex, IndexKind, IndexLoadError, Metric, SearchResult

__all__ = [
    "DEFAULT_PATTERNS",
    "FAISS_HINT",
    "Embedder",
    "FaissIndex",
    "HashingEmbedder",
    "IndexKind",
    "IndexLoadError",
    "Metric",
    "SearchResult",
    "SentenceTransformerEmbedder",
    "TextDocument",
    "embedder_from_spec",
    "get_embedder",
    "import_faiss",
    "index_documents",
    "index_folder",
    "load_folder",
    "load_jsonl",
]
