"""Listwise reranker end to end over a fake core whose identifier logits are chosen by the test.

The fake core keeps the real prompt building of the tiny model's core (so prompts are real
token ids) and replaces only the model primitives: it decodes each prompt, finds which passage
sits behind each identifier, and returns ``relevance[passage] + bias[position]`` as that
identifier's logit (only ``bias`` for content-free "N/A" passages). Final orders are therefore
known exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
import torch

from rerank_plugins import registry
from rerank_plugins.rerankers.listwise import ListwiseReranker
from rerank_plugins.scoring import get_core
from rerank_plugins.scoring.core import CoreStats

_UNSET = object()  # a parameter row that leaves `calibrate` to its default


def doc(i: int) -> str:
    return f"item{i}x"


class FakeCore:
    """Real tokenizer and prompts (tiny model); logits chosen by the test; generate scripted."""

    def __init__(self, real, relevance: dict[str, float], bias: Sequence[float] = (), replies: Sequence[str] = ()):
        self.real = real
        self.tokenizer = real.tokenizer
        self.max_length = real.max_length
        self.name = "fake"
        self.capabilities = frozenset({"prompts", "logits", "generate"})
        self.stats = CoreStats()
        self.relevance = relevance
        self.bias = list(bias)
        self.replies = list(replies)
        self.calls: list[int] = []  # rows per next_token_logits call
        self.prompts: list[str] = []

    def tokenize(self, text: str) -> list[int]:
        return self.real.tokenize(text)

    def encode_chat(self, *args, **kwargs):
        return self.real.encode_chat(*args, **kwargs)

    def passages(self, ids: Sequence[int]) -> list[str]:
        text = self.tokenizer.decode(list(ids))
        self.prompts.append(text)
        # The passages sit between the first "Query: ..." line and the second "Query:".
        body = text.split("Query:")[1].split("\n", 1)[1]
        found = re.findall(r"item\d+x|N/A", body)
        return found

    def next_token_logits(self, prompts, token_ids, prefix=None):
        assert prefix is None
        self.calls.append(len(prompts))
        k = len(token_ids[0]) if isinstance(token_ids[0], (list, tuple)) else len(token_ids)
        out = torch.zeros(len(prompts), k)
        for r, ids in enumerate(prompts):
            for j, p in enumerate(self.passages(ids)):
                b = self.bias[j] if j < len(self.bias) else 0.0
                out[r, j] = b + (0.0 if p == "N/A" else self.relevance[p])
        return out

    def generate(self, prompts, max_new_tokens=64):
        self.calls.append(len(prompts))
        return [self.replies.pop(0) for _ in prompts]


@pytest.fixture(scope="module")
def real_core(tiny_model):
    return get_core(tiny_model)


def fake(real_core, n: int, bias: Sequence[float] = (), replies: Sequence[str] = ()) -> FakeCore:
    # doc(i) has relevance i: the ideal ranking is n-1, ..., 0.
    return FakeCore(real_core, {doc(i): float(i) for i in range(n)}, bias, replies)


def order(hits) -> list[int]:
    return [h.index for h in hits]


def test_single_window_sorts_by_identifier_logits(real_core):
    core = fake(real_core, 5)
    r = ListwiseReranker(core, window=5, calibrate="none")
    hits, stats = r.rerank_with_stats("q", [doc(i) for i in range(5)])
    assert order(hits) == [4, 3, 2, 1, 0]
    assert core.calls == [1]
    assert stats["windows"] == 1 and stats["rows"] == 1
    assert stats["top1_first_position"] == 0
    scores = [h.score for h in hits]
    assert [int(s) for s in scores] == [5, 4, 3, 2, 1]  # integer part: n - final position
    p = torch.softmax(torch.tensor([4.0, 3, 2, 1, 0], dtype=torch.float64), 0)
    assert scores[0] == round(5 + float(p[0]), 3)


def test_sliding_window_back_to_front_exact_order(real_core):
    # window 3, stride 2 over 5: windows (2,5) then (0,3).
    # [0,1,2,3,4] -> sort items 2,3,4 -> [0,1,4,3,2] -> sort items 0,1,4 -> [4,1,0,3,2]
    core = fake(real_core, 5)
    r = ListwiseReranker(core, window=3, stride=2, calibrate="none")
    hits, stats = r.rerank_with_stats("q", [doc(i) for i in range(5)])
    assert order(hits) == [4, 1, 0, 3, 2]
    assert core.calls == [1, 1]
    assert stats["windows"] == 2
    along = [h.score for h in hits]
    assert along == sorted(along, reverse=True) and len(set(along)) == 5


def test_two_passes_finish_the_sort(real_core):
    core = fake(real_core, 5)
    r = ListwiseReranker(core, window=3, stride=2, passes=2, calibrate="none")
    # pass 2 on [4,1,0,3,2]: items 0,3,2 -> [4,1,3,2,0]; items 4,1,3 -> [4,3,1,2,0]
    hits, stats = r.rerank_with_stats("q", [doc(i) for i in range(5)])
    assert order(hits) == [4, 3, 1, 2, 0]
    assert stats["windows"] == 4


def test_full_ranking_uses_one_window_over_everything(real_core):
    core = fake(real_core, 7)
    r = ListwiseReranker(core, window=3, stride=2, full_ranking=True, calibrate="none")
    hits, stats = r.rerank_with_stats("q", [doc(i) for i in range(7)])
    assert order(hits) == [6, 5, 4, 3, 2, 1, 0]
    assert stats["windows"] == 1 and stats["full_ranking_fallback"] == 0


def test_full_ranking_falls_back_when_identifiers_run_out(real_core):
    core = fake(real_core, 60)
    r = ListwiseReranker(core, window=20, stride=10, full_ranking=True, calibrate="none")
    hits, stats = r.rerank_with_stats("q", [doc(i) for i in range(60)])
    assert stats["full_ranking_fallback"] == 1
    assert stats["windows"] == 5  # (40,60) (30,50) (20,40) (10,30) (0,20)
    assert order(hits)[:10] == list(range(59, 49, -1))  # a pass with stride 10 fixes the top 10


def test_position_bias_wins_without_calibration_and_is_removed_with_it(real_core):
    bias = [10.0, 6.0, 3.0, 1.0, 0.0]  # the model prefers early identifiers whatever the content
    docs = [doc(i) for i in range(5)]
    raw = ListwiseReranker(fake(real_core, 5, bias), window=5, calibrate="none")
    hits, stats = raw.rerank_with_stats("q", docs)
    assert order(hits) == [0, 1, 2, 3, 4]
    assert stats["top1_first_position"] == 1
    core = fake(real_core, 5, bias)
    cal = ListwiseReranker(core, window=5, calibrate="window")
    assert order(cal.rerank("q", docs)) == [4, 3, 2, 1, 0]
    assert core.calls == [1, 1]  # the window's rows, then the content-free row (cached from now on)
    assert "N/A" in core.prompts[-1]
    assert order(cal.rerank("q2", docs)) == [4, 3, 2, 1, 0]
    assert core.calls == [1, 1, 1]


def test_query_calibration_rows_of_a_batch_share_one_extra_call(real_core):
    core = fake(real_core, 5, [10.0, 6.0, 3.0, 1.0, 0.0])
    r = ListwiseReranker(core, window=5, calibrate="query")
    hits, stats = r.rerank_with_stats("what", [doc(i) for i in range(5)])
    assert order(hits) == [4, 3, 2, 1, 0]
    assert core.calls == [1, 1]  # the window row, then its short content-free row (not padded to the window)
    assert stats["calibration_rows"] == 1 and stats["rows"] == 1
    assert "Query: what" in core.prompts[-1] and core.prompts[-1].count("N/A") == 5
    core.calls.clear()
    r.rerank_batch(["a", "b"], [[doc(i) for i in range(5)], [doc(1), doc(3), doc(0)]])
    assert core.calls == [2, 2]


def test_permutation_self_consistency_cancels_a_linear_position_bias(real_core):
    bias = [8.0, 6.0, 4.0, 2.0, 0.0]  # stronger than the relevance gaps (1 per step)
    docs = [doc(i) for i in range(5)]
    one = ListwiseReranker(fake(real_core, 5, bias), window=5, calibrate="none")
    assert order(one.rerank("q", docs)) == [0, 1, 2, 3, 4]
    core = fake(real_core, 5, bias)
    two = ListwiseReranker(core, window=5, calibrate="none", permutations=2)
    hits, stats = two.rerank_with_stats("q", docs)
    assert order(hits) == [4, 3, 2, 1, 0]
    assert core.calls == [2] and stats["rows"] == 2
    shown = [re.findall(r"item\d+x", p.split("Query:")[1]) for p in core.prompts]  # query "q" has no item
    assert shown == [docs, docs[::-1]]


def test_windows_of_several_queries_share_one_forward_pass_per_step(real_core):
    core = fake(real_core, 5)
    r = ListwiseReranker(core, window=3, stride=2, calibrate="none")
    batch = r.score_batch(["q1", "q2", "q3"], [[doc(i) for i in range(5)], [doc(3), doc(1)], [doc(2)]])
    assert core.calls == [2, 1]  # step 0: q1's (2,5) and q2's only window; step 1: q1's (0,3)
    alone = [r.score("q1", [doc(i) for i in range(5)]), r.score("q2", [doc(3), doc(1)]), [1.0]]
    assert batch == alone


def test_window_sizes_can_differ_within_one_batch(real_core):
    core = fake(real_core, 7)
    r = ListwiseReranker(core, window=4, stride=2, calibrate="window")
    scores = r.score_batch(["a", "b"], [[doc(i) for i in range(7)], [doc(6), doc(0)]])
    assert sorted(range(2), key=lambda i: -scores[1][i]) == [0, 1]
    assert sorted(range(7), key=lambda i: -scores[0][i])[:2] == [6, 5]


def test_generate_mode_parses_and_counts(real_core):
    replies = [" B > A > B > Q", " junk"]
    core = fake(real_core, 4, replies=replies)
    r = ListwiseReranker(core, mode="generate", window=3, stride=1)
    # windows (1,4) then (0,3): " B > A > B > Q" on items [1,2,3] -> [2,1,3] -> ranking [0,2,1,3]
    # " junk" on items [0,2,1] -> failed, kept -> [0,2,1,3]
    hits, s = r.rerank_with_stats("q", [doc(i) for i in range(4)])
    assert order(hits) == [0, 2, 1, 3]
    assert [h.score for h in hits] == [4.0, 3.0, 2.0, 1.0]
    assert (s["parse_complete"], s["parse_repaired"], s["parse_partial"], s["parse_failed"]) == (0, 0, 1, 1)
    assert (s["ids_duplicate"], s["ids_missing"], s["free_words"]) == (1, 4, 2)
    assert s["windows"] == 2


def test_one_document_needs_no_model(real_core):
    core = fake(real_core, 1)
    r = ListwiseReranker(core)
    assert order(r.rerank("q", [doc(0)])) == [0]
    assert core.calls == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "sort"}, "mode must be 'first' or 'generate'"),
        ({"window": 1}, "window must be >= 2"),
        ({"stride": 30}, "stride must be in"),
        ({"calibrate": "yes"}, "calibrate must be"),
        ({"permutations": 0}, "permutations must be a positive int"),
        ({"mode": "generate", "permutations": 2}, "permutations applies to mode='first' only"),
        ({"mode": "generate", "calibrate": "window"}, "calibrate applies to mode='first' only"),
        ({"doc_max_tokens": 0}, "doc_max_tokens must be a positive int"),
        ({"window": 60}, "too few single-token identifiers for a window of 60"),
    ],
)
def test_bad_options_raise(real_core, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ListwiseReranker(fake(real_core, 2), **kwargs)


@pytest.mark.parametrize(
    ("mode", "calibrate", "want"),
    [
        ("first", _UNSET, (False, "content_free")),
        ("first", None, (False, "content_free")),
        ("first", False, (False, "content_free")),
        ("first", "none", (False, "content_free")),
        ("first", True, (True, "content_free")),
        ("first", "window", (True, "content_free")),
        ("first", "query", (True, "real")),
        ("generate", _UNSET, (False, "content_free")),
        ("generate", None, (False, "content_free")),
    ],
)
def test_calibrate_none_means_no_calibration_not_the_default(real_core, mode, calibrate, want):
    # The bench CLI parses `calibrate=none` to None; that must not fall back to the default.
    kwargs = {} if calibrate is _UNSET else {"calibrate": calibrate}
    options = ListwiseReranker(fake(real_core, 2), mode=mode, **kwargs).options
    assert (options.calibrate, options.calibration_query) == want


def test_calibrate_none_from_a_bench_method_spec(tiny_model):
    from rerank_plugins.evaluation.bench import parse_method_spec

    spec = parse_method_spec("listwise:calibrate=none,window=4")
    r = registry.create(spec.name, model=str(tiny_model), **spec.options)
    assert r.describe()["calibrate"] is False


def test_registry_builds_it_on_the_tiny_model(tiny_model):
    r = registry.create("listwise", model=str(tiny_model), window=4, stride=2)
    assert isinstance(r, ListwiseReranker)
    docs = ["Paris is the capital of France.", "Berlin.", "The quick brown fox.", "", "café 東京", "Query: x"]
    hits = r.rerank("capital of France", docs)
    assert sorted(order(hits)) == list(range(6))
    assert hits == r.rerank("capital of France", docs)
    assert r.describe()["mode"] == "first" and r.describe()["calibrate"] is False
    assert r.describe()["doc_max_tokens"] == 96
    assert r.describe()["calibration_query"] == "content_free"


def test_first_mode_costs_one_forward_pass_per_window_on_a_real_core(tiny_model):
    r = ListwiseReranker(str(tiny_model), window=4, stride=2, calibrate="window")
    docs = ["Paris is the capital of France.", "Berlin.", "The quick brown fox.", "a", "b", "c"]
    before = r.core.stats.snapshot()
    r.rerank("capital of France", docs)
    after = r.core.stats.snapshot()
    # windows (2,6) and (0,4), plus the content-free row for window size 4 (cached afterwards)
    assert after["forward_passes"] - before["forward_passes"] == 3
    assert after["generated_tokens"] == before["generated_tokens"]
    r.rerank("capital of Germany", docs)
    assert r.core.stats.snapshot()["forward_passes"] - after["forward_passes"] == 2
