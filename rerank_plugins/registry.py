"""Name -> reranker factory, open to third parties through an entry-point group.

Built-in strategies register themselves lazily (their modules import torch); third-party
packages add theirs under the ``rerank_plugins.rerankers`` entry-point group, each entry point
naming a callable ``factory(**options) -> Reranker``.

Example:
    >>> from rerank_plugins import registry
    >>> "pointwise" in registry.available()
    True
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from rerank_plugins.types import Reranker

if TYPE_CHECKING:
    from rerank_plugins.options import Options

__all__ = ["ENTRY_POINT_GROUP", "available", "create", "get_factory", "options_class", "register"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "rerank_plugins.rerankers"

Factory = Callable[..., Reranker]

# Built-ins are named as "module:attribute" so that listing names imports nothing heavy.
_BUILTIN: dict[str, str] = {
    "identity": "rerank_plugins.rerankers.identity:IdentityReranker",
    "pointwise": "rerank_plugins.rerankers.pointwise:PointwiseReranker",
    "cross-encoder": "rerank_plugins.rerankers.cross_encoder:CrossEncoderReranker",
    "listwise": "rerank_plugins.rerankers.listwise:ListwiseReranker",
    "pairwise": "rerank_plugins.rerankers.pairwise:PairwiseReranker",
    "attention": "rerank_plugins.rerankers.attention:AttentionReranker",
}

_registered: dict[str, Factory] = {}
_lock = threading.Lock()


def register(name: str, factory: Factory | None = None, *, overwrite: bool = False) -> Any:
    """Register ``factory`` under ``name``; usable as a decorator.

    Example:
        >>> from rerank_plugins.registry import register
        >>> @register("my-doc-reranker", overwrite=True)
        ... class Mine: ...
    """
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")

    def _do(f: Factory) -> Factory:
        with _lock:
            if not overwrite and (name in _registered or name in _BUILTIN):
                raise ValueError(f"name {name!r} is already registered; pass overwrite=True to replace it")
            _registered[name] = f
        return f

    return _do(factory) if factory is not None else _do


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Names of every strategy: built-in, registered at run time, and from entry points."""
    builtin = {n for n, target in _BUILTIN.items() if _builtin_available(target)}
    names = builtin | set(_registered) | set(_entry_points())
    return sorted(names)


def _builtin_available(target: str) -> bool:
    module = target.split(":")[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def get_factory(name: str) -> Factory:
    """The factory registered under ``name``; ``ValueError`` listing the known names if none."""
    with _lock:
        if name in _registered:
            return _registered[name]
    if name in _BUILTIN:
        module, attr = _BUILTIN[name].split(":")
        if not _builtin_available(_BUILTIN[name]):
            raise ValueError(f"strategy {name!r} is not implemented in this version ({module} missing)")
        factory: Factory = getattr(importlib.import_module(module), attr)
        return factory
    eps = _entry_points()
    if name in eps:
        loaded: Factory = eps[name].load()
        return loaded
    raise ValueError(f"unknown reranker name {name!r}; known: {', '.join(available())}")


def options_class(name: str) -> type[Options] | None:
    """The typed options of the strategy ``name`` (its factory's ``options_class``), or ``None``.

    A factory declares its options by carrying an ``options_class`` attribute, a subclass of
    :class:`rerank_plugins.options.Options`; the adapters turn it into typed fields.

    Example:
        >>> from rerank_plugins import registry
        >>> registry.options_class("pairwise").__name__, registry.options_class("identity")
        ('PairwiseOptions', None)
    """
    from rerank_plugins.options import Options

    found = getattr(get_factory(name), "options_class", None)
    return found if isinstance(found, type) and issubclass(found, Options) else None


def create(name: str, **options: Any) -> Reranker:
    """Build the reranker registered as ``name`` with keyword ``options``.

    Example:
        >>> from rerank_plugins import registry
        >>> registry.create("identity").rerank("q", ["a", "b"])
        [Hit(index=0, score=0.0), Hit(index=1, score=-1.0)]
    """
    return get_factory(name)(**options)
