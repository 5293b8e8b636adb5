"""Small helpers shared by the strategies (no model loading of their own)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rerank_plugins.scoring import ScoringCore, get_core
from rerank_plugins.scoring.model import check_bool

__all__ = ["check_bool", "check_positive_int", "common_prefix_len", "resolve_core"]


def check_positive_int(name: str, value: object, *, minimum: int = 1, allow_none: bool = False) -> Any:
    """Return ``value`` if it is an int ``>= minimum`` (``None`` too when allowed), else ``ValueError``.

    ``bool`` is refused although it subclasses ``int``: ``doc_max_tokens=True`` is a mistake,
    not a budget of one token.

    Example:
        >>> check_positive_int("batch_size", 8)
        8
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {what}{' or None' if allow_none else ''}, got {value!r}")
    return value


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
