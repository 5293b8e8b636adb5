"""The head profiles shipped for Qwen2.5-Coder-0.5B- and 1.5B-Instruct are what ``heads="auto"``
(the attention default) picks for the provisioned models (RERANK_QUALITY_LLM in float32 and in
bfloat16, RERANK_QUALITY_LLM_LARGE in bfloat16), each only for its own model; auto scores as
naming the profile's heads does, and unlike every head; ``heads=None`` opts out; SmolLM2, which
has no profile, gets every head."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerank_plugins.rerankers import heads as heads_module
from rerank_plugins.rerankers.attention import AttentionReranker
from rerank_plugins.rerankers.heads import HeadProfile
from rerank_plugins.scoring import get_core

pytestmark = pytest.mark.integration

QWEN_05B_PROFILE = "qwen2.5-coder-0.5b-instruct.json"
QWEN_15B_PROFILE = "qwen2.5-coder-1.5b-instruct.json"
QUERY = "what is the capital of France?"
DOCS = [
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Paris is the capital and most populous city of France.",
    "Bananas are rich in potassium.",
]


def _shipped(name: str) -> HeadProfile:
    return HeadProfile.load({path.name: path for path in heads_module.profile_paths()}[name])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_auto_picks_the_shipped_profile_for_the_quality_model(quality_llm: Path, dtype: str) -> None:
    profile = _shipped(QWEN_05B_PROFILE)
    core = get_core(str(quality_llm), dtype=dtype)
    assert profile.matches(core.model_identity())
    auto = AttentionReranker(core)
    assert auto.describe()["head_profile"] == QWEN_05B_PROFILE
    assert auto.describe()["head_count"] == len(profile.heads) == 8
    scores = auto.score(QUERY, DOCS)
    assert scores == AttentionReranker(core, heads=profile.pairs()).score(QUERY, DOCS)
    assert not _shipped(QWEN_15B_PROFILE).matches(core.model_identity())
    every = AttentionReranker(core, heads=None)
    assert every.describe()["head_profile"] is None
    n_layers, n_heads = core.attention_layout()
    assert every.describe()["head_count"] == n_layers * n_heads
    assert scores != every.score(QUERY, DOCS)


def test_auto_picks_the_shipped_profile_for_the_large_quality_model(quality_llm_large: Path) -> None:
    profile = _shipped(QWEN_15B_PROFILE)
    core = get_core(str(quality_llm_large), dtype="bfloat16")
    assert profile.matches(core.model_identity())
    assert not _shipped(QWEN_05B_PROFILE).matches(core.model_identity())
    auto = AttentionReranker(core)
    assert auto.describe()["head_profile"] == QWEN_15B_PROFILE and auto.describe()["head_count"] == 8
    scores = auto.score(QUERY, DOCS)
    assert scores == AttentionReranker(core, heads=profile.pairs()).score(QUERY, DOCS)
    assert scores != AttentionReranker(core, heads=None).score(QUERY, DOCS)


def test_a_model_without_a_profile_gets_every_head(smollm2: Path) -> None:
    core = get_core(str(smollm2))
    auto = AttentionReranker(core)
    assert auto.describe()["head_profile"] is None
    assert auto.score(QUERY, DOCS) == AttentionReranker(core, heads=None).score(QUERY, DOCS)
