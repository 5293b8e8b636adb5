"""Attention reranking (ICR) on the real SmolLM2-135M-Instruct (RERANK_TEST_LLM)."""

from __future__ import annotations

import pytest
import torch

from rerank_plugins.rerankers.attention import AttentionReranker

pytestmark = pytest.mark.integration

DOCS = [
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Paris is the capital and most populous city of France.",
    "The Great Wall of China is thousands of kilometres long.",
    "Bananas are rich in potassium.",
]


@pytest.fixture(scope="module")
def reranker(smollm2):
    return AttentionReranker(str(smollm2), attn_implementation="sdpa")


def test_capture_equals_eager_on_the_real_model(reranker, smollm2):
    from transformers import AutoModelForCausalLM

    core = reranker.core
    ids = core.encode_chat(["Paris is the capital of France. Question: what is the capital of France?"]).input_ids
    cut = len(ids) - 12
    rows = core.suffix_attention(ids[:cut], [ids[cut:]], layers=range(0, 30, 7))[0]
    eager = AutoModelForCausalLM.from_pretrained(smollm2, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        att = eager(torch.tensor([ids]), output_attentions=True).attentions
    ref = sum(att[i][0, :, cut:, :].sum(0) for i in range(0, 30, 7))
    torch.testing.assert_close(rows, ref, atol=1e-4, rtol=1e-3)
    assert core.model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize(
    ("query", "best"),
    [
        ("What is the capital of France?", 2),
        ("How do plants make energy from light?", 1),
        ("Which fruit has a lot of potassium?", 4),
    ],
)
def test_the_answering_passage_ranks_first(reranker, query, best):
    hits, stats = reranker.rerank_with_stats(query, DOCS)
    assert hits[0].index == best
    assert sorted(h.index for h in hits) == list(range(len(DOCS)))
    assert stats["windows"] == 1.0
