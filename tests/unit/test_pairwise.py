"""PairwiseReranker on the tiny random model: prompts, prefix KV reuse, cache, counters, options."""

from __future__ import annotations

import pytest
import torch

from rerank_plugins import registry
from rerank_plugins.rerankers.pairwise import (
    PairwiseReranker,
    _ModelComparator,
    answer_tokens,
    combine_orders,
)
from rerank_plugins.scoring import Document

QUERY = "what is the capital of France?"
DOCS = [
    "Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog.",
    "Berlin is the capital of Germany.",
    "",
    "café naïve 東京",
]


@pytest.fixture(scope="module")
def reranker(tiny_core):
    return PairwiseReranker(tiny_core)


def reference_prob(core, a: str, b: str) -> float:
    """P(" A") for one ordered comparison, built the plain way: Document parts, no prefix KV."""
    enc = core.encode_chat(
        [
            f'Given a query "{QUERY}", which of the following two passages is more relevant to the query?'
            '\n\nPassage A: "',
            Document(a),
            '"\n\nPassage B: "',
            Document(b),
            '"\n\nOutput Passage A or Passage B:',
        ],
        assistant_prefix="Passage",
    )
    logits = core.next_token_logits([enc.input_ids], core.token_ids([" A", " B"]))
    return float(torch.softmax(logits, dim=1)[0, 0])


def test_answer_tokens_are_single_tokens_after_the_prefix(tiny_core):
    prefix, (a, b) = answer_tokens(tiny_core)
    assert tiny_core.tokenize("Passage A") == [*prefix, a]
    assert tiny_core.tokenize("Passage B") == [*prefix, b]
    assert tiny_core.tokenizer.decode([a]) == " A"


def test_answer_tokens_refuse_multi_token_answers():
    class SplitCore:
        name = "fake"

        def tokenize(self, text: str) -> list[int]:
            return [ord(c) for c in text]  # one id per character: " A" is two tokens

    with pytest.raises(ValueError, match="single-token answers"):
        answer_tokens(SplitCore())  # type: ignore[arg-type]


def test_prompt_is_the_prrp_prompt_token_for_token(reranker, tiny_core):
    cmp = _ModelComparator(reranker, QUERY, DOCS)
    spliced = cmp.prompt(0, 2)
    enc = tiny_core.encode_chat(
        [
            f'Given a query "{QUERY}", which of the following two passages is more relevant to the query?'
            '\n\nPassage A: "',
            Document(DOCS[0]),
            '"\n\nPassage B: "',
            Document(DOCS[2]),
            '"\n\nOutput Passage A or Passage B:',
        ],
        assistant_prefix="Passage",
    )
    assert spliced == enc.input_ids
    text = tiny_core.tokenizer.decode(spliced)
    assert text.endswith(
        'Passage A: "Paris is the capital of France."\n\nPassage B: "Berlin is the capital of Germany."'
        "\n\nOutput Passage A or Passage B:<|im_end|>\n<|im_start|>assistant\nPassage"
    )


@pytest.mark.parametrize("prefix_reuse", ["query", "passage"])
def test_comparator_matches_plain_prompts(tiny_core, prefix_reuse):
    r = PairwiseReranker(tiny_core, prefix_reuse=prefix_reuse)
    cmp = _ModelComparator(r, QUERY, DOCS)
    pairs = [(0, 1), (0, 2), (3, 0), (4, 2)]
    probs = cmp(pairs)
    for (i, j), p in zip(pairs, probs, strict=True):
        p_ab, p_ba = reference_prob(tiny_core, DOCS[i], DOCS[j]), reference_prob(tiny_core, DOCS[j], DOCS[i])
        assert cmp.cache[(i, j)] == pytest.approx(p_ab, abs=1e-4)
        assert cmp.cache[(j, i)] == pytest.approx(p_ba, abs=1e-4)
        assert p == combine_orders(cmp.cache[(i, j)], cmp.cache[(j, i)], "ties")
    assert cmp.comparisons == 8 and cmp.cache_hits == 0 and cmp.rounds == 1


def test_cache_never_recomputes_an_ordered_comparison(tiny_core):
    r = PairwiseReranker(tiny_core)
    cmp = _ModelComparator(r, QUERY, DOCS)
    before = tiny_core.stats.snapshot()["forward_passes"]
    first = cmp([(0, 1), (1, 0), (0, 1)])  # one pair asked three times in one round: two prompts
    assert (cmp.comparisons, cmp.cache_hits) == (2, 4)
    mid = tiny_core.stats.snapshot()["forward_passes"]
    assert cmp([(1, 0)]) == [1.0 - first[0]]
    assert (cmp.comparisons, cmp.cache_hits, cmp.rounds) == (2, 6, 2)
    assert tiny_core.stats.snapshot()["forward_passes"] == mid > before


def test_passage_reuse_groups_by_passage_a(tiny_core):
    docs = [d * 4 for d in DOCS[:4]]  # passages long enough for their KV reuse to pay off
    r = PairwiseReranker(tiny_core, prefix_reuse="passage")
    cmp = _ModelComparator(r, QUERY, docs)
    before = tiny_core.stats.snapshot()
    cmp([(i, j) for i in range(4) for j in range(i + 1, 4)])  # 12 prompts, 3 per Passage A
    after = tiny_core.stats.snapshot()
    # 4 groups: each one prefix pass (instruction + query + Passage A) and one pass for its rows
    assert after["forward_passes"] - before["forward_passes"] == 8
    q = PairwiseReranker(tiny_core, prefix_reuse="query")
    cmp_q = _ModelComparator(q, QUERY, docs)
    cmp_q([(i, j) for i in range(4) for j in range(i + 1, 4)])
    tokens_q = tiny_core.stats.snapshot()["prompt_tokens"] - after["prompt_tokens"]
    assert after["prompt_tokens"] - before["prompt_tokens"] < tokens_q
    for key, p in cmp.cache.items():
        assert cmp_q.cache[key] == pytest.approx(p, abs=1e-4)


@pytest.mark.parametrize("schedule", ["allpair", "heapsort", "sliding"])
def test_rerank_counters(tiny_core, schedule):
    r = PairwiseReranker(tiny_core, schedule=schedule, k=3)
    before = tiny_core.stats.snapshot()["forward_passes"]
    hits = r.rerank(QUERY, DOCS)
    n = len(DOCS)
    assert sorted(h.index for h in hits) == list(range(n))
    s = r.last_stats
    assert s["requested"] == s["comparisons"] + s["cache_hits"]
    assert s["comparisons"] <= n * (n - 1)
    assert s["forward_passes"] == tiny_core.stats.snapshot()["forward_passes"] - before
    if schedule == "allpair":
        assert (s["comparisons"], s["cache_hits"], s["rounds"]) == (n * (n - 1), 0, 1)
        # which documents win: PRP's tie rule on plain-prompt probabilities, written out here
        wins = [0.0] * n
        for i in range(n):
            for j in range(n):
                if i != j:
                    i_first = reference_prob(tiny_core, DOCS[i], DOCS[j]) > 0.5  # i as Passage A wins
                    i_second = reference_prob(tiny_core, DOCS[j], DOCS[i]) < 0.5  # i as Passage B wins
                    wins[i] += 1.0 if i_first and i_second else 0.0 if not (i_first or i_second) else 0.5
        expected = sorted(range(n), key=lambda i: (-wins[i], i))
        assert [(h.index, h.score) for h in hits] == [(i, wins[i]) for i in expected]
        assert sum(wins) == n * (n - 1) / 2
    elif schedule == "sliding":
        assert s["requested"] == 2 * (3 * (n - 1) - 3) and s["rounds"] == 9
    else:
        assert [h.score for h in hits] == [5.0, 4.0, 3.0, 2.0, 1.0]


def test_top_k_sets_the_heap_depth(tiny_core):
    r = PairwiseReranker(tiny_core, schedule="heapsort", k=5)
    full = r.rerank(QUERY, DOCS)
    full_requested = r.last_stats["requested"]
    top = r.rerank(QUERY, DOCS, top_k=1)
    assert r.last_stats["requested"] < full_requested
    assert top == full[:1]


def test_soft_aggregation_scores_are_win_probabilities(tiny_core):
    r = PairwiseReranker(tiny_core, aggregation="soft")
    hits = r.rerank(QUERY, DOCS[:3])
    cmp = _ModelComparator(r, QUERY, DOCS[:3])
    expected = [sum(cmp([(i, j)])[0] for j in range(3) if j != i) for i in range(3)]
    assert {h.index: h.score for h in hits} == pytest.approx(dict(enumerate(expected)), abs=1e-5)


def test_long_documents_are_truncated_and_counted(tiny_core):
    r = PairwiseReranker(tiny_core, doc_max_tokens=4)
    before = tiny_core.stats.snapshot()["truncated_documents"]
    cmp = _ModelComparator(r, QUERY, ["word " * 50, "yes", "another long passage about capitals"])
    assert len(cmp.docs[0]) == 4 and cmp.docs[1] == tiny_core.tokenize("yes")
    assert tiny_core.stats.snapshot()["truncated_documents"] - before == 2


def test_registry_and_describe(tiny_model):
    r = registry.create("pairwise", model=str(tiny_model), schedule="sliding", k=2)
    assert isinstance(r, PairwiseReranker)
    assert r.describe() == {
        "name": "pairwise",
        "model": r.core.name,
        "dtype": "float32",
        "schedule": "sliding",
        "k": 2,
        "aggregation": "ties",
        "prefix_reuse": "passage",
        "doc_max_tokens": 256,
    }


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"schedule": "bubble"}, "schedule"),
        ({"k": 0}, "k must"),
        ({"k": True}, "k must"),
        ({"aggregation": "mean"}, "aggregation"),
        ({"prefix_reuse": "none"}, "prefix_reuse"),
        ({"doc_max_tokens": 0}, "doc_max_tokens"),
    ],
)
def test_bad_options(tiny_core, options, match):
    with pytest.raises(ValueError, match=match):
        PairwiseReranker(tiny_core, **options)
