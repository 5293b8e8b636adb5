"""How the contract suite builds each registered strategy on tiny in-process models.

A new strategy registered in rerank_plugins.registry is picked up automatically and built with
``model=<tiny model folder>``; add an entry to OPTIONS only if it needs other settings.
"""

from __future__ import annotations

from typing import Any

from rerank_plugins import registry
from rerank_plugins.testing import tiny_cross_encoder_dir, tiny_model_dir

# name -> extra options (besides model) that keep the tiny-model run small and fast
OPTIONS: dict[str, dict[str, Any]] = {}

NO_MODEL = {"identity"}


def build(name: str) -> Any:
    if name in NO_MODEL:
        return registry.create(name)
    if name == "cross-encoder":
        return registry.create(name, model=str(tiny_cross_encoder_dir()))
    return registry.create(name, model=str(tiny_model_dir()), **OPTIONS.get(name, {}))


def names() -> list[str]:
    return registry.available()
