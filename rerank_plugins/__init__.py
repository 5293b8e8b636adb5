"""rerank-plugins: LLM rerankers over one shared model, for LlamaIndex and LangChain.

Example:
    >>> from rerank_plugins import create
    >>> reranker = create("identity")
    >>> [h.index for h in reranker.rerank("query", ["first", "second"])]
    [0, 1]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rerank_plugins.registry import available, create, register
from rerank_plugins.types import BaseReranker, Hit, Reranker, hits_from_scores

if TYPE_CHECKING:
    from rerank_plugins.scoring import ScoringCore, get_core

__version__ = "0.1.0"

__all__ = [
    "BaseReranker",
    "Hit",
    "Reranker",
    "ScoringCore",
    "__version__",
    "available",
    "create",
    "get_core",
    "hits_from_scores",
    "register",
]


def __getattr__(name: str) -> Any:
    # The scoring core imports torch; load it only when asked for.
    if name in ("get_core", "ScoringCore"):
        from rerank_plugins import scoring

        return getattr(scoring, name)
    raise AttributeError(f"module 'rerank_plugins' has no attribute {name!r}")
