"""Strategy options are typed fields of the adapter classes, in both frameworks, plugins included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import Field, StrictBool, ValidationError

from rerank_plugins import registry
from rerank_plugins.options import Options
from rerank_plugins.types import BaseReranker
from tests.contract.test_adapter_contract import FACES, RETRIEVAL_SCORES, Face


def _cls(face: Face, strategy: str) -> Any:
    return next(c for c in face.classes if getattr(c, "strategy", None) == strategy)


@pytest.mark.parametrize("face_name", sorted(FACES))
@pytest.mark.parametrize("strategy", ["pointwise", "listwise", "pairwise", "attention", "cross-encoder"])
def test_every_option_is_a_typed_field(face_name: str, strategy: str) -> None:
    cls = _cls(FACES[face_name](), strategy)
    options = registry.options_class(strategy)
    assert options is not None
    for name, info in options.model_fields.items():
        field = cls.model_fields[name]
        assert (field.annotation, field.default, field.description) == (info.annotation, info.default, info.description)
    assert "reranker_kwargs" not in cls.model_fields
    assert cls.__doc__.startswith(f"{'LlamaIndex node postprocessor' if face_name == 'llama_index' else 'LangChain'}")


@pytest.mark.parametrize("face_name", sorted(FACES))
def test_options_reach_the_strategy_and_are_checked(face_name: str, tiny_model: Path) -> None:
    cls = _cls(FACES[face_name](), "pointwise")
    adapter = cls(model=str(tiny_model), calibrate=False, doc_max_tokens=64, top_n=2)
    options = adapter.reranker_instance.options
    assert (options.calibrate, options.doc_max_tokens) == (False, 64)
    for bad in ({"calibrate": "yes"}, {"doc_max_tokens": True}, {"reranker_kwargs": {"calibrate": False}}):
        with pytest.raises(ValidationError):
            cls(model=str(tiny_model), **bad)


class BoostOptions(Options):
    """Options of the test plugin."""

    reverse: StrictBool = Field(default=False, description="Rank the last input first.")


class BoostReranker(BaseReranker):
    """A plugin strategy: input order, or its reverse."""

    name = "boost"
    options_class = BoostOptions

    def __init__(self, **options: Any) -> None:
        self.options = BoostOptions.build(options)

    def score(self, query: str, documents: list[str]) -> list[float]:
        n = len(documents)
        return [float(i if self.options.reverse else n - i) for i in range(n)]


@pytest.mark.parametrize("face_name", sorted(FACES))
def test_a_plugin_strategy_gets_a_typed_class_with_no_line_of_adapter_code(face_name: str) -> None:
    registry.register("boost", BoostReranker)
    face = FACES[face_name]()
    base = next(c for c in face.classes[0].__mro__ if c.__name__ == "StrategyRerank")
    try:
        _check_boost(face, base)
    finally:  # other tests list the classes: leave only the built-ins
        base.classes.pop("boost", None)


def _check_boost(face: Face, base: Any) -> None:
    cls = base.for_strategy("boost")
    assert cls.__name__ == "BoostRerank" and base.for_strategy("boost") is cls
    assert cls.model_fields["reverse"].description == "Rank the last input first."
    out = face.run(cls(reverse=True, top_n=2), face.make(["a", "b", "c"], RETRIEVAL_SCORES[:3]), "q")
    assert [face.text(o) for o in out] == ["c", "b"]
    with pytest.raises(ValidationError):
        cls(reverse="yes")
