"""Typed strategy options: validated once, reports derived from them, the same names everywhere."""

from __future__ import annotations

from typing import Any

import pytest

from rerank_plugins import registry
from rerank_plugins.options import LoadOptions, OptionsError
from rerank_plugins.rerankers.attention import AttentionOptions
from rerank_plugins.rerankers.listwise import ListwiseOptions
from rerank_plugins.rerankers.pairwise import PairwiseOptions
from rerank_plugins.rerankers.pointwise import PointwiseOptions

LLM = ("pointwise", "listwise", "pairwise", "attention")


@pytest.mark.parametrize("name", LLM)
def test_describe_is_every_option_plus_the_model(name: str, tiny_core: Any) -> None:
    r = registry.create(name, model=tiny_core)
    options = registry.options_class(name)
    assert options is not None and isinstance(r.options, options)
    described = r.describe()
    strategy_fields = set(options.model_fields) - set(LoadOptions.model_fields)
    derived = {"listwise": {"id_style"}, "attention": {"head_profile", "head_count"}}.get(name, set())
    assert set(described) == {"name", "model", "dtype"} | strategy_fields | derived
    assert {k: described[k] for k in strategy_fields - derived} == {
        k: getattr(r.options, k) for k in strategy_fields - derived
    }
    assert repr(r).startswith(f"{type(r).__name__}({tiny_core.name!r}")


def test_the_same_idea_has_the_same_name() -> None:
    assert {"window", "stride"} <= set(ListwiseOptions.model_fields) & set(AttentionOptions.model_fields)
    for options in (ListwiseOptions, AttentionOptions, PointwiseOptions):
        assert options.model_fields["calibrate"].annotation is not str
    assert "doc_max_tokens" in PairwiseOptions.model_fields


def test_options_are_checked_once_with_a_message_naming_the_option() -> None:
    with pytest.raises(OptionsError, match="doc_max_tokens must be an int, got True"):
        PointwiseOptions.build({"doc_max_tokens": True})
    with pytest.raises(OptionsError, match="doc_max_tokens must be a positive int, got 0"):
        PointwiseOptions.build({"doc_max_tokens": 0})
    with pytest.raises(OptionsError, match="k: unknown option"):
        PointwiseOptions.build({"k": 3})
    with pytest.raises(OptionsError, match="calibrate must be a bool, got 'yes'"):
        PointwiseOptions.build({"calibrate": "yes"})


def test_a_ready_options_object_or_keywords_not_both(tiny_core: Any) -> None:
    from rerank_plugins.rerankers.pointwise import PointwiseReranker

    r = PointwiseReranker(tiny_core, options=PointwiseOptions(calibrate=False))
    assert r.options.calibrate is False
    with pytest.raises(ValueError, match="not both"):
        PointwiseReranker(tiny_core, options=PointwiseOptions(), calibrate=False)
    with pytest.raises(ValueError, match="must be a PointwiseOptions"):
        PointwiseReranker(tiny_core, options=PairwiseOptions())  # type: ignore[arg-type]


def test_options_are_frozen() -> None:
    options = PairwiseOptions()
    with pytest.raises(ValueError, match="frozen"):
        options.k = 3  # type: ignore[misc]


def test_listwise_resolves_unset_options_from_its_mode() -> None:
    first = ListwiseOptions(window=8)
    assert (first.stride, first.calibrate, first.doc_max_tokens) == (4, False, 96)
    generate = ListwiseOptions(mode="generate")
    assert generate.calibrate is False and "letters" in (generate.answer_instruction or "")
    # resolved values are not "set": an adapter passes on only what its user chose
    assert first.model_fields_set == {"window"}
