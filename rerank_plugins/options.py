"""Typed strategy options: one pydantic model per strategy, validated once, shared by every face.

A strategy declares its settings as an :class:`Options` subclass. The strategy validates its
keyword arguments through it; ``describe()`` and ``repr`` are derived from it; the LlamaIndex
and LangChain adapters inherit the same fields, so a user's IDE and pydantic see every option
with its type, default and description wherever the strategy is used.

Example:
    >>> from rerank_plugins.options import Options
    >>> class MyOptions(Options):
    ...     depth: int = 10
    >>> MyOptions.build({"depth": 3}).depth
    3
    >>> MyOptions.build({"depth": True})
    Traceback (most recent call last):
    ...
    rerank_plugins.options.OptionsError: depth: Input should be a valid integer, got True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

__all__ = ["LLMOptions", "LoadOptions", "Options", "OptionsError", "PositiveInt"]

#: an ``int >= 1``; ``True`` and ``2.0`` are mistakes, not counts
PositiveInt = Annotated[int, Field(ge=1, strict=True)]


class OptionsError(ValueError):
    """A strategy option has a wrong type or value; the message names the option."""


class Options(BaseModel):
    """Base of every strategy's options: frozen, unknown names refused.

    Fields are strict one by one (``StrictBool``, :data:`PositiveInt`...): ``True`` is not a
    count and ``"false"`` is not a bool. The adapters inherit the fields, not the model-wide
    settings, so their own framework fields keep their framework's rules.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)

    @classmethod
    def build(cls, values: Mapping[str, Any]) -> Self:
        """Validate ``values`` into options; a bad value is an :class:`OptionsError` naming it."""
        try:
            return cls(**dict(values))
        except ValidationError as exc:
            raise OptionsError(_message(exc)) from None

    def settings(self) -> dict[str, Any]:
        """The options as plain values (for ``describe()`` and reports)."""
        return self.model_dump(mode="json")


class LoadOptions(Options):
    """How the shared core loads the model; ignored when the model is a ready backend."""

    device: StrictStr | None = Field(default=None, description='"cuda", "cuda:1", "cpu"; None picks CUDA when present.')
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = Field(
        default=None, description="Weights' dtype; None/auto picks per device (see rerank_plugins.scoring)."
    )
    attn_implementation: Literal["sdpa", "eager"] | None = Field(
        default=None, description="transformers attention kernel; None keeps the model's default."
    )
    trust_remote_code: StrictBool = Field(default=False, description="Run the model repository's own code.")

    def load_options(self) -> dict[str, Any]:
        """The fields that go to :func:`~rerank_plugins.scoring.get_core` (unset ones left out)."""
        values = {name: getattr(self, name) for name in LoadOptions.model_fields}
        return {k: v for k, v in values.items() if v is not None}


class LLMOptions(LoadOptions):
    """Options every LLM strategy has."""

    doc_max_tokens: PositiveInt = Field(
        default=256, description="Per-document token budget; longer documents are cut and counted."
    )

    def settings(self) -> dict[str, Any]:
        # how the model was loaded is the backend's description, not a strategy setting
        return {k: v for k, v in super().settings().items() if k not in LoadOptions.model_fields}


_KINDS = {
    "bool_type": "a bool", "bool_parsing": "a bool",
    "int_type": "an int", "int_parsing": "an int", "int_from_float": "an int",
    "float_type": "a number", "float_parsing": "a number",
    "string_type": "a string", "none_required": "None", "list_type": "a list",
}


def _expected(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind in _KINDS:
        return _KINDS[kind]
    if kind == "greater_than_equal":
        return "a positive int" if ctx.get("ge") == 1 else f">= {ctx.get('ge')}"
    if kind == "literal_error":
        return str(ctx.get("expected", ""))
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ").removeprefix("Input should be ").removeprefix("must be ")


def _message(exc: ValidationError) -> str:
    """One sentence per option, in the form "name must be X or Y, got value"."""
    by_name: dict[str, tuple[list[str], Any]] = {}
    for err in exc.errors(include_url=False):
        name = str(err["loc"][0]) if err["loc"] else ""
        if err["type"] == "extra_forbidden":
            by_name[name] = (["a known option (unknown option)"], err["input"])
            continue
        sentence = str(err["msg"]).removeprefix("Value error, ")
        if not name or sentence.startswith(f"{name} "):  # a check's own message is the whole sentence
            by_name.setdefault("", ([], None))[0].append(sentence)
            continue
        wanted = _expected(err)
        entry = by_name.setdefault(name, ([], err["input"]))
        if wanted not in entry[0]:
            entry[0].append(wanted)
    parts = []
    for name, (wanted, value) in by_name.items():
        if not name:
            parts += wanted
        elif wanted == ["a known option (unknown option)"]:
            parts.append(f"{name}: unknown option")
        else:
            parts.append(f"{name} must be {' or '.join(wanted)}, got {value!r}")
    return "; ".join(parts)
