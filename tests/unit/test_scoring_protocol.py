"""The one door to the model: every strategy runs on an object that offers only the protocol.

``ProtocolOnly`` forwards the protocol's methods, and nothing else, to the tiny model's core: no
``model``, ``loaded``, ``tokenizer``, lock or private member. A strategy that reached past the
protocol would fail here with ``AttributeError``; one that stays behind it ranks exactly as it
does on the core itself.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from rerank_plugins import registry
from rerank_plugins.scoring import CoreStats, MissingPrimitiveError, is_backend, require

QUERY = "what is the capital of France?"
DOCS = [
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "The quick brown fox jumps over the lazy dog.",
    "France is a country in Europe; its capital is Paris.",
]
LLM_OPTIONS: dict[str, dict[str, Any]] = {
    "pointwise": {},
    "listwise": {"window": 3, "stride": 1},
    "pairwise": {"schedule": "heapsort", "k": 2},
    "attention": {},
}


class ProtocolOnly:
    """The scoring protocol over a real core, with a chosen subset of capabilities."""

    def __init__(self, core: Any, capabilities: set[str] | None = None) -> None:
        self._core = core
        self.name = f"protocol-only:{core.name}"
        self.capabilities = frozenset(capabilities if capabilities is not None else core.capabilities)
        self.max_length = core.max_length
        self.stats = CoreStats()

    def tokenize(self, text: str) -> list[int]:
        return self._core.tokenize(text)

    def token_ids(self, words: Any) -> list[int]:
        return self._core.token_ids(words)

    def encode_chat(self, parts: Any, **kwargs: Any) -> Any:
        return self._core.encode_chat(parts, **kwargs)

    def encode_documents(self, texts: Any, max_tokens: int) -> list[list[int]]:
        return self._core.encode_documents(texts, max_tokens)

    def next_token_logits(self, prompts: Any, token_ids: Any, *, prefix: Any = None) -> Any:
        return self._core.next_token_logits(prompts, token_ids, prefix=prefix)

    def generate(self, prompts: Any, max_new_tokens: int = 64) -> list[str]:
        return self._core.generate(prompts, max_new_tokens)

    def suffix_attention(self, prefix: Any, suffixes: Any, **kwargs: Any) -> Any:
        return self._core.suffix_attention(prefix, suffixes, **kwargs)

    def attention_layout(self) -> tuple[int, int]:
        return self._core.attention_layout()

    def describe(self) -> dict[str, Any]:
        return {"backend": "test double", "model": self.name}


@pytest.mark.parametrize("name", sorted(LLM_OPTIONS))
def test_every_llm_strategy_runs_behind_the_protocol_alone(name: str, tiny_core: Any) -> None:
    direct = registry.create(name, model=tiny_core, **LLM_OPTIONS[name]).rerank(QUERY, DOCS)
    behind = registry.create(name, model=ProtocolOnly(tiny_core), **LLM_OPTIONS[name]).rerank(QUERY, DOCS)
    assert [(h.index, h.score) for h in behind] == [(h.index, h.score) for h in direct]


def test_listwise_generate_mode_runs_behind_the_protocol_alone(tiny_core: Any) -> None:
    r = registry.create("listwise", model=ProtocolOnly(tiny_core), mode="generate", window=3, max_new_tokens=4)
    assert sorted(h.index for h in r.rerank(QUERY, DOCS)) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("name", "options", "missing"),
    [
        ("pointwise", {}, "logits"),
        ("pairwise", {}, "logits"),
        ("listwise", {}, "logits"),
        ("listwise", {"mode": "generate"}, "generate"),
        ("attention", {}, "attention"),
    ],
)
def test_a_missing_primitive_fails_at_construction_naming_it(
    name: str, options: dict[str, Any], missing: str, tiny_core: Any
) -> None:
    backend = ProtocolOnly(tiny_core, set(tiny_core.capabilities) - {missing})
    with pytest.raises(MissingPrimitiveError, match=f"the {name} strategy needs .*'{missing}'.*{backend.name}"):
        registry.create(name, model=backend, **options)


def test_cross_encoder_needs_pair_scores(tiny_core: Any) -> None:
    with pytest.raises(MissingPrimitiveError, match="cross-encoder pair scores"):
        registry.create("cross-encoder", model=tiny_core)


def test_the_core_explains_an_architecture_without_attention_capture(tiny_core: Any, monkeypatch) -> None:
    monkeypatch.setattr(tiny_core.model.config, "model_type", "gpt2")
    assert "attention" not in tiny_core.capabilities
    with pytest.raises(MissingPrimitiveError, match="does not support model type 'gpt2'"):
        registry.create("attention", model=tiny_core)


def test_backend_checks() -> None:
    assert not is_backend("a/model") and not is_backend(object())
    with pytest.raises(ValueError, match="needs a scoring backend"):
        require(object(), "logits", strategy="pointwise")


def test_a_core_offers_every_llm_primitive(tiny_core: Any) -> None:
    assert tiny_core.capabilities == {"prompts", "logits", "generate", "attention", "forward"}
    assert tiny_core.describe() == {
        "backend": "transformers", "model": tiny_core.name, "device": "cpu", "dtype": "float32"
    }
    layers, heads = tiny_core.attention_layout()
    assert (layers, heads) == (tiny_core.model.config.num_hidden_layers, tiny_core.model.config.num_attention_heads)


def test_encode_documents_cuts_to_the_budget_and_counts(tiny_core: Any) -> None:
    before = tiny_core.stats.snapshot()["truncated_documents"]
    long, short = "word " * 50, "Paris"
    ids = tiny_core.encode_documents([long, short], max_tokens=5)
    assert ids == [tiny_core.tokenize(long)[:5], tiny_core.tokenize(short)]
    assert tiny_core.stats.snapshot()["truncated_documents"] - before == 1
    with pytest.raises(ValueError, match="max_tokens"):
        tiny_core.encode_documents([short], max_tokens=True)


def test_per_call_statistics_never_mix_across_threads(tiny_core: Any) -> None:
    r = registry.create("pairwise", model=tiny_core, schedule="allpair")
    results: dict[int, dict[str, float]] = {}
    barrier = threading.Barrier(2)

    def run(n: int) -> None:
        barrier.wait()
        results[n] = r.rerank_with_stats(QUERY, DOCS[:n])[1]

    threads = [threading.Thread(target=run, args=(n,)) for n in (2, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[2]["comparisons"] == 2 * 1 and results[4]["comparisons"] == 4 * 3
