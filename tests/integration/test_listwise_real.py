"""Listwise on real tokenizers and weights: identifiers are one and the same token in prompt and answer.

Run after: eval "$(python3 ../shared/models/provision.py --exports smollm2 qwen)"
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rerank_plugins.rerankers.listwise import ListwiseReranker, resolve_identifiers

pytestmark = pytest.mark.integration

HINT = 'run: eval "$(python3 ../shared/models/provision.py --exports smollm2 qwen)" (see README, Tests)'

QUERY = "What is the capital of France?"
DOCS = [
    "Berlin is the capital of Germany.",
    "Paris is the capital and most populous city of France.",
    "Bananas are yellow and rich in potassium.",
]


def model_path(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"{var} is not set; {HINT}")
    path = Path(value)
    if not path.exists():
        pytest.fail(f"{var}={value} does not exist; {HINT}")
    return path


@pytest.fixture(scope="module", params=["RERANK_TEST_LLM", "RERANK_QUALITY_LLM"], ids=["smollm2", "qwen"])
def listwise(request) -> ListwiseReranker:
    return ListwiseReranker(str(model_path(request.param)))


def test_qwen_merges_bracket_letters_which_is_why_ids_are_written_after_a_space():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path("RERANK_QUALITY_LLM"))
    merged = [c for c in "ABCDEFGHIJKLMNOPQRST" if len(tok("[" + c, add_special_tokens=False)["input_ids"]) == 1]
    assert len(merged) >= 15  # "[A" is one token: an id written "[A]" is not the token after a pre-filled "["


def test_every_letter_is_one_canonical_token_in_prompt_and_answer(listwise):
    ids = listwise.ids
    assert ids.style == "space"
    assert len(ids.labels) == 52 and ids.labels[:3] == ("A", "B", "C")
    tok = listwise.core.tokenizer
    for label, t in zip(ids.labels, ids.token_ids, strict=True):
        assert tok.decode([t]) == " " + label


def contains(seq: list[int], sub: list[int]) -> bool:
    return any(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_ids_sit_in_the_prompt_and_open_the_answer_as_the_tokenizers_own_split(listwise):
    tok = listwise.core.tokenizer

    def t(s: str) -> list[int]:
        return tok(s, add_special_tokens=False)["input_ids"]

    prompt = listwise._prompt(QUERY, DOCS, 256)
    text = tok.decode(prompt)
    assert "\nPassage A: Berlin" in text and "\nPassage C: Bananas" in text and text.endswith("Ranking:")
    assert prompt[-len(t("Ranking:")) :] == t("Ranking:")
    for label, tid in zip(listwise.ids.labels[:3], listwise.ids.token_ids[:3], strict=True):
        # in the prompt: "Passage B:" exactly as the tokenizer splits it, B being one token ...
        assert contains(prompt, t(f"\nPassage {label}:"))
        assert t(f"\nPassage {label}:") == [*t("\nPassage"), tid, *t(":")]
        # ... and the answer "Ranking: B > ..." starts with that very token after the prefix
        assert t(f"Ranking: {label} > A") == [*t("Ranking:"), tid, *t(" >"), listwise.ids.token_ids[0]]


def test_resolve_identifiers_on_the_real_tokenizer_directly(listwise):
    scheme = resolve_identifiers(listwise.core.tokenize, 20)
    assert scheme == listwise.ids


def test_first_mode_one_forward_pass_and_a_permutation(listwise):
    before = listwise.core.stats.snapshot()["forward_passes"]
    hits = listwise.rerank(QUERY, DOCS)
    assert sorted(h.index for h in hits) == [0, 1, 2]
    passes = listwise.core.stats.snapshot()["forward_passes"] - before
    assert passes in (1, 2)  # the window, plus the content-free row the first time a window size is seen
    assert listwise.rerank(QUERY, DOCS) == hits


def test_first_scores_are_the_plain_models_next_token_logits_of_the_ids(listwise):
    import torch

    r = ListwiseReranker(listwise.core, calibrate="none")
    hits = r.rerank(QUERY, DOCS)
    prompt = r._prompt(QUERY, DOCS, 256)
    with torch.inference_mode():
        logits = r.core.model(input_ids=torch.tensor([prompt])).logits[0, -1]
    expected = sorted(range(3), key=lambda i: -float(logits[r.ids.token_ids[i]]))
    assert [h.index for h in hits] == expected
    p = torch.softmax(logits[list(r.ids.token_ids[:3])].double(), 0)
    assert hits[0].score == round(3 + min(round(float(p.max()), 3), 0.999), 3)


def test_generate_mode_on_smollm2_always_returns_a_permutation_and_counts_the_parse():
    r = ListwiseReranker(str(model_path("RERANK_TEST_LLM")), mode="generate", max_new_tokens=24)
    hits, s = r.rerank_with_stats(QUERY, DOCS)
    assert sorted(h.index for h in hits) == [0, 1, 2]
    assert s["windows"] == 1
    assert s["parse_complete"] + s["parse_repaired"] + s["parse_partial"] + s["parse_failed"] == 1
