"""The identity baseline: keeps the input (first-stage) order.

Used by benchmarks to separate the cost of the plumbing from the cost of a model, and by
users as a no-op stand-in.
"""

from __future__ import annotations

from rerank_plugins.types import BaseReranker

__all__ = ["IdentityReranker"]


class IdentityReranker(BaseReranker):
    """Returns documents in input order with scores ``0, -1, -2, ...``.

    ``relevance`` is the position: 1 for the first document down to 0 for the last.

    Example:
        >>> IdentityReranker().rerank("q", ["a", "b", "c"], top_k=2)
        [Hit(index=0, score=0.0), Hit(index=1, score=-1.0)]
    """

    name = "identity"
    per_document = True

    def score(self, query: str, documents: list[str]) -> list[float]:
        return [float(-i) for i in range(len(documents))]  # float(-0) is 0.0, not -0.0
