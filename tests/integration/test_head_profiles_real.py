"""The head profile shipped for Qwen2.5-Coder-0.5B-Instruct is what ``heads="auto"`` (the attention
default) picks for the provisioned model (RERANK_QUALITY_LLM), in float32 and in bfloat16, and
it scores as naming its heads does; ``heads=None`` opts out and SmolLM2, which has no profile,
gets every head."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerank_plugins.rerankers import heads as heads_module
from rerank_plugins.rerankers.attention import AttentionReranker
from rerank_plugins.rerankers.heads import HeadProfile
from rerank_plugins.scoring import get_core

pytestmark = pytest.mark.integration

QWEN_05B_PROFILE = "qwen2.5-coder-0.5b-instruct.json"
QUERY = "what is the capital of France?"
DOCS = [
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Paris is the capital and most populous city of France.",
    "Bananas are rich in potassium.",
]


def _shipped(name: str) -> HeadProfile:
    return HeadProfile.load(Path(heads_module.__file__).parent / "profiles" / name)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_auto_picks_the_shipped_profile_for_the_quality_model(quality_llm: Path, dtype: str) -> None:
    profile = _shipped(QWEN_05B_PROFILE)
    core = get_core(str(quality_llm), dtype=dtype)
    assert profile.matches(core.model_identity())
    auto = AttentionReranker(core)
    assert auto.describe()["head_profile"] == QWEN_05B_PROFILE
    assert auto.describe()["head_count"] == len(profile.heads) == 8
    assert auto.score(QUERY, DOCS) == AttentionReranker(core, heads=profile.pairs()).score(QUERY, DOCS)
    every = AttentionReranker(core, heads=None)
    assert every.describe()["head_profile"] is None
    assert every.describe()["head_count"] == core.attention_layout()[0] * core.attention_layout()[1]


def test_a_model_without_a_profile_gets_every_head(smollm2: Path) -> None:
    core = get_core(str(smollm2))
    assert not _shipped(QWEN_05B_PROFILE).matches(core.model_identity())
    auto = AttentionReranker(core)
    assert auto.describe()["head_profile"] is None
    assert auto.score(QUERY, DOCS) == AttentionReranker(core, heads=None).score(QUERY, DOCS)
