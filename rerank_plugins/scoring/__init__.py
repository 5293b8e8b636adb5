"""The one door to a model: the scoring protocol, its in-process core, and the cross-encoder backend.

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
from rerank_plugins.scoring.cross_encoder import CrossEncoderCore, get_cross_encoder_core
from rerank_plugins.scoring.model import (
    LoadedModel,
    ModelLoadError,
    ModelSpec,
    load_count,
    load_model,
    resolve_device,
    resolve_dtype,
)
from rerank_plugins.scoring.protocol import MissingPrimitiveError, ScoringBackend, is_backend, require

__all__ = [
    "CoreStats",
    "CrossEncoderCore",
    "Document",
    "EncodedPrompt",
    "LoadedModel",
    "MissingPrimitiveError",
    "ModelLoadError",
    "ModelSpec",
    "ScoringBackend",
    "ScoringCore",
    "clear_cores",
    "get_core",
    "get_cross_encoder_core",
    "is_backend",
    "load_count",
    "load_model",
    "require",
    "resolve_device",
    "resolve_dtype",
]
