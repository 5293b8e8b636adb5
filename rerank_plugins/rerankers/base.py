"""The base of the model strategies: options validated once, the backend checked, reports derived.

A strategy declares its options class and the primitives it needs, and implements
``_score_one`` (or ``_score_call`` to batch queries); the base validates the options, gets the
shared backend for the model, checks that it offers those primitives, and derives
``describe()`` and ``repr`` from the options. Per-call counters go into the
:class:`~rerank_plugins.types.Call`, never onto the instance.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

from rerank_plugins.options import LLMOptions, LoadOptions, Options
from rerank_plugins.scoring import get_core
from rerank_plugins.scoring.protocol import Capability, is_backend, require
from rerank_plugins.types import BaseReranker, Call

__all__ = ["ModelArg", "ModelReranker", "check_model_name", "common_prefix_len", "resolve_backend"]

#: what a strategy accepts as its model
ModelArg = str | os.PathLike[str] | Any


def resolve_backend(model: ModelArg, options: LoadOptions) -> Any:
    """The backend for ``model``: a ready backend passes through, a name gets the shared core."""
    if is_backend(model):
        return model
    check_model_name(model)
    return get_core(model, **options.load_options())


def check_model_name(model: object) -> None:
    """``ValueError`` unless ``model`` is a hub id, folder or file name."""
    if model is None or not isinstance(model, (str, os.PathLike)):
        raise ValueError(
            "model must be a hub id, a local folder, a .gguf file or a scoring backend (ScoringCore), "
            f"got {type(model).__name__}"
        )


class ModelReranker(BaseReranker):
    """Base of the strategies over a scoring backend; subclasses set :attr:`options_class` and :attr:`needs`.

    Args:
        model: hub id, local folder, ``.gguf`` file, or a scoring backend (a
            :class:`~rerank_plugins.scoring.ScoringCore`, a served model, a test double).
        options: a ready options object, instead of keyword options.
        **kwargs: the strategy's options (its :attr:`options_class` lists them).
    """

    #: the strategy's options model
    options_class: ClassVar[type[Options]] = LLMOptions
    #: primitives of the scoring protocol the strategy calls
    needs: ClassVar[tuple[Capability, ...]] = ("prompts", "logits")
    #: options shown in ``repr`` after the model name
    repr_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: ModelArg, *, options: Options | None = None, **kwargs: Any) -> None:
        if options is not None:
            if kwargs:
                raise ValueError(f"pass options= or keyword options, not both (got {sorted(kwargs)})")
            if not isinstance(options, self.options_class):
                raise ValueError(f"options must be a {self.options_class.__name__}, got {type(options).__name__}")
            self.options = options
        else:
            self.options = self.options_class.build(kwargs)
        self.core = self._backend(model)
        require(self.core, *self._needs(), strategy=self.name)
        self._prepare()

    def _prepare(self) -> None:
        """Work done once per reranker after the backend is known (e.g. resolving answer tokens)."""

    def _backend(self, model: ModelArg) -> Any:
        assert isinstance(self.options, LoadOptions)
        return resolve_backend(model, self.options)

    def _needs(self) -> tuple[Capability, ...]:
        return self.needs

    # ------------------------------------------------------------------ scoring
    def score(self, query: str, documents: list[str]) -> list[float]:
        return self._score_call([query], [documents], Call())[0]

    def score_batch(self, queries: list[str], documents: list[list[str]]) -> list[list[float]]:
        return self._score_call(queries, documents, Call())

    def _score_call(self, queries: list[str], documents: list[list[str]], call: Call) -> list[list[float]]:
        return [self._score_one(q, d, call) for q, d in zip(queries, documents, strict=True)]

    def _score_one(self, query: str, documents: list[str], call: Call) -> list[float]:
        raise NotImplementedError(f"{type(self).__name__} implements neither _score_call nor _score_one")

    # ------------------------------------------------------------------ reporting
    def _derived_settings(self) -> dict[str, Any]:
        """Settings resolved at construction (e.g. the identifier style the tokenizer allowed)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Strategy, model, the backend's dtype when it has one, and every option's value."""
        out: dict[str, Any] = {"name": self.name, "model": self.core.name}
        backend = self.core.describe() if callable(getattr(self.core, "describe", None)) else {}
        if "dtype" in backend:
            out["dtype"] = backend["dtype"]
        return {**out, **self.options.settings(), **self._derived_settings()}

    def _repr_args(self) -> str:
        args = [repr(self.core.name)]
        args += [f"{name}={getattr(self.options, name)!r}" for name in self.repr_settings]
        return ", ".join(args)


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
