"""The shared scoring core: one model per process and config, and the primitives strategies use.

Example:
    >>> from rerank_plugins.scoring import get_core
    >>> core = get_core("path/to/SmolLM2-135M-Instruct")  # doctest: +SKIP
"""

from __future__ import annotations

from rerank_plugins.scoring.core import (
    CoreStats,
    Document,
    EncodedPrompt,
    ScoringCore,
    clear_cores,
    get_core,
)
from rerank_plugins.scoring.model import (
    LoadedModel,
    ModelLoadError,
    ModelSpec,
    load_count,
    load_model,
    resolve_device,
    resolve_dtype,
)

__all__ = [
    "CoreStats",
    "Document",
    "EncodedPrompt",
    "LoadedModel",
    "ModelLoadError",
    "ModelSpec",
    "ScoringCore",
    "clear_cores",
    "get_core",
    "load_count",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]
