"""Constructor arguments of every strategy and model loader: a wrong type is a ValueError naming it.

``bool`` is never an int (``doc_max_tokens=True`` is not a budget of one token) and
``trust_remote_code`` takes only a real bool: the string ``"false"`` is truthy and would run a
checkpoint's own Python code.
"""

from __future__ import annotations

from typing import Any

import pytest

from rerank_plugins import registry
from rerank_plugins.scoring import get_core, load_count, load_model
from rerank_plugins.scoring.model import load_cross_encoder

LLM_STRATEGIES = ["pointwise", "listwise", "pairwise", "attention"]
NOT_BOOLS = ["false", "", "True", 0, 1, None]


def _model_for(name: str, tiny_model: Any, tiny_cross_encoder: Any) -> str:
    return str(tiny_cross_encoder if name == "cross-encoder" else tiny_model)


@pytest.mark.parametrize("value", NOT_BOOLS, ids=repr)
@pytest.mark.parametrize("name", [*LLM_STRATEGIES, "cross-encoder"])
def test_trust_remote_code_takes_only_a_bool(name, value, tiny_model, tiny_cross_encoder) -> None:
    model = _model_for(name, tiny_model, tiny_cross_encoder)
    loads = load_count()
    with pytest.raises(ValueError, match="trust_remote_code must be a bool"):
        registry.create(name, model=model, trust_remote_code=value)
    assert load_count() == loads  # refused before anything was loaded


@pytest.mark.parametrize("name", LLM_STRATEGIES)
def test_trust_remote_code_is_checked_with_a_ready_core(name, tiny_core) -> None:
    with pytest.raises(ValueError, match="trust_remote_code"):
        registry.create(name, model=tiny_core, trust_remote_code="false")


@pytest.mark.parametrize("value", NOT_BOOLS, ids=repr)
def test_loaders_take_only_a_bool_trust_remote_code(value, tiny_model, tiny_cross_encoder) -> None:
    with pytest.raises(ValueError, match="trust_remote_code must be a bool"):
        load_model(tiny_model, trust_remote_code=value)
    with pytest.raises(ValueError, match="trust_remote_code must be a bool"):
        get_core(str(tiny_model), trust_remote_code=value)
    with pytest.raises(ValueError, match="trust_remote_code must be a bool"):
        load_cross_encoder(tiny_cross_encoder, trust_remote_code=value)


BAD_OPTIONS = [
    ("pointwise", {"doc_max_tokens": True}, "doc_max_tokens"),
    ("pointwise", {"doc_max_tokens": 2.0}, "doc_max_tokens"),
    ("pointwise", {"doc_max_tokens": 0}, "doc_max_tokens"),
    ("listwise", {"window": True}, "window"),
    ("listwise", {"stride": True}, "stride"),
    ("listwise", {"passes": True}, "passes"),
    ("listwise", {"permutations": True}, "permutations"),
    ("listwise", {"doc_max_tokens": True}, "doc_max_tokens"),
    ("listwise", {"mode": "generate", "max_new_tokens": True}, "max_new_tokens"),
    ("listwise", {"mode": "generate", "max_new_tokens": 8.0}, "max_new_tokens"),
    ("listwise", {"seed": True}, "seed"),
    ("listwise", {"seed": "1"}, "seed"),
    ("listwise", {"full_ranking": 1}, "full_ranking"),
    ("pairwise", {"k": True}, "k"),
    ("pairwise", {"doc_max_tokens": True}, "doc_max_tokens"),
    ("attention", {"doc_max_tokens": True}, "doc_max_tokens"),
    ("attention", {"window_size": True}, "window_size"),
    ("attention", {"window_stride": True}, "window_stride"),
    ("attention", {"calibrate": 1}, "calibrate"),
    ("attention", {"outlier_std": True}, "outlier_std"),
    ("attention", {"layers": 3}, "layers"),
    ("attention", {"layers": 1.5}, "layers"),
    ("attention", {"layers": b"\x00\x01"}, "layers"),
    ("attention", {"layers": {0, 1}}, "layers"),
    ("attention", {"layers": [True]}, "layers"),
    ("attention", {"layers": []}, "layers"),
    ("attention", {"layers": "3"}, "layers"),
    ("cross-encoder", {"batch_size": True}, "batch_size"),
    ("cross-encoder", {"batch_size": 2.0}, "batch_size"),
    ("cross-encoder", {"batch_size": "8"}, "batch_size"),
    ("cross-encoder", {"max_length": True}, "max_length"),
    ("cross-encoder", {"max_length": 64.0}, "max_length"),
]


@pytest.mark.parametrize(
    ("name", "options", "argument"),
    BAD_OPTIONS,
    ids=[f"{n}-" + ",".join(f"{k}={v!r}" for k, v in o.items()) for n, o, _ in BAD_OPTIONS],
)
def test_bad_option_is_a_value_error_naming_it(name, options, argument, tiny_model, tiny_cross_encoder) -> None:
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        registry.create(name, model=_model_for(name, tiny_model, tiny_cross_encoder), **options)


@pytest.mark.parametrize(("layers", "expected"), [("0:1", [0]), ([1], [1]), ((0, 1), [0, 1]), (range(-1, 0), [1])])
def test_attention_layers_accepts_what_it_documents(layers, expected, tiny_core) -> None:
    assert registry.create("attention", model=tiny_core, layers=layers)._layer_ids == expected
