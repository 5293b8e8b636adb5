"""Small helpers shared by the strategies (no model loading of their own)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rerank_plugins.scoring import ScoringCore, get_core

__all__ = ["common_prefix_len", "resolve_core"]


def resolve_core(model: str | os.PathLike[str] | ScoringCore, **load_options: Any) -> ScoringCore:
    """The shared core for ``model`` (a core passes through; names go through :func:`get_core`)."""
    if model is None:
        raise ValueError("model must be a hub id, a local folder, a .gguf file or a ScoringCore")
    return get_core(model, **{k: v for k, v in load_options.items() if v is not None})


def common_prefix_len(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix shared by every row, leaving each row at least one token.

    Example:
        >>> common_prefix_len([[1, 2, 3], [1, 2, 4, 5]])
        2
    """
    if not rows:
        return 0
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    for i in range(max(n, 0)):
        if any(r[i] != first[i] for r in rows):
            return i
    return max(n, 0)
