"""The contract helpers, the registry and optional-dependency hints."""

from __future__ import annotations

import math
import sys

import pytest

from rerank_plugins import registry
from rerank_plugins.types import BaseReranker, Hit, hits_from_scores


def test_hits_from_scores_orders_and_breaks_ties_by_index():
    assert hits_from_scores([0.5, 2.0, 0.5, -1.0]) == [Hit(1, 2.0), Hit(0, 0.5), Hit(2, 0.5), Hit(3, -1.0)]
    assert hits_from_scores([1.0, 3.0, 2.0], top_k=2) == [Hit(1, 3.0), Hit(2, 2.0)]


def test_nan_scores_rank_last_and_nothing_is_lost():
    hits = hits_from_scores([math.nan, 1.0, math.nan, 0.0])
    assert [h.index for h in hits] == [1, 3, 0, 2]


def test_hit_is_frozen():
    with pytest.raises(AttributeError):
        Hit(0, 1.0).score = 2.0  # type: ignore[misc]


class _Wrong(BaseReranker):
    def score(self, query, documents):
        return [1.0]


def test_a_strategy_returning_the_wrong_number_of_scores_fails_loudly():
    with pytest.raises(RuntimeError, match="returned 1 scores for 3 documents"):
        _Wrong().rerank("q", ["a", "b", "c"])


def test_registry_lists_builtins_and_rejects_unknown_names():
    assert {"identity", "pointwise", "cross-encoder"} <= set(registry.available())
    with pytest.raises(ValueError, match="unknown reranker name 'nope'; known: .*pointwise"):
        registry.create("nope")


def test_register_and_overwrite():
    class Mine(BaseReranker):
        name = "mine-test"

        def score(self, query, documents):
            return [float(len(d)) for d in documents]

    registry.register("mine-test", Mine, overwrite=True)
    assert "mine-test" in registry.available()
    assert [h.index for h in registry.create("mine-test").rerank("q", ["a", "abc", "ab"])] == [1, 2, 0]
    with pytest.raises(ValueError, match="already registered"):
        registry.register("mine-test", Mine)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("pointwise", Mine)


def test_entry_point_plugins_are_found(monkeypatch):
    class _EP:
        name = "third-party"

        def load(self):
            from rerank_plugins.testing import KeywordReranker

            return KeywordReranker

    monkeypatch.setattr(registry, "entry_points", lambda group: [_EP()] if group == registry.ENTRY_POINT_GROUP else [])
    assert "third-party" in registry.available()
    assert [h.index for h in registry.create("third-party").rerank("red apple", ["blue", "red apple"])] == [1, 0]


def test_gguf_extra_hint(monkeypatch):
    from rerank_plugins.scoring import model

    monkeypatch.setitem(sys.modules, "gguf", None)  # makes `import gguf` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "rerank-plugins\[gguf\]"'):
        model._require_gguf()


def test_keyword_reranker_is_exact():
    from rerank_plugins.testing import KeywordReranker

    hits = KeywordReranker().rerank("red apple pie", ["apple", "red apple pie", "sky", "pie apple"])
    assert hits == [Hit(1, 3.0), Hit(3, 2.0), Hit(0, 1.0), Hit(2, 0.0)]
