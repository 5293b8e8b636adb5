"""Lazy import of FAISS, failing with the exact install command."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["FAISS_HINT", "import_faiss"]

FAISS_HINT = 'pip install "rerank-plugins[faiss]"'


def import_faiss() -> ModuleType:
    """Return the ``faiss`` module, or raise ``ImportError`` naming the extra to install.

    Example:
        >>> faiss = import_faiss()
        >>> faiss.IndexFlatIP(4).d
        4
    """
    try:
        return importlib.import_module("faiss")
    except ImportError as exc:
        raise ImportError(
            f"FAISS retrieval needs the faiss package: {FAISS_HINT} (or faiss-gpu for CUDA machines)"
        ) from exc
