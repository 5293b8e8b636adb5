"""Keyword arguments given to a retriever's ``invoke`` / ``ainvoke``.

LangChain hands every keyword argument of ``invoke(query, config, **kwargs)`` to
``_get_relevant_documents``. A misspelt or unsupported one must not be dropped silently (the
caller would get a different number of documents than asked for), so anything other than the
retriever's own count argument is an error; ``verbose`` is LangChain's own and is let through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# read by BaseRetriever.invoke itself, yet still passed on to _get_relevant_documents
_LANGCHAIN_KWARGS = frozenset({"verbose"})


def result_count(name: str, value: object, default: int | None, extra: Mapping[str, Any], owner: str) -> int | None:
    """The number of documents for one call: ``value`` if given (a positive int), else ``default``.

    Raises ``ValueError`` naming ``name`` for a bad value, or naming any keyword in ``extra``
    that ``owner`` does not take.

    Example:
        >>> result_count("k", None, 4, {}, "FaissRetriever"), result_count("k", 2, 4, {"verbose": True}, "R")
        (4, 2)
    """
    unknown = sorted(set(extra) - _LANGCHAIN_KWARGS)
    if unknown:
        raise ValueError(
            f"{owner} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"the number of documents is set with {name}="
        )
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value
