"""Listwise: the pure parts (window schedules, parsing, permutations, calibration, scores)."""

from __future__ import annotations

import pytest
import torch

from rerank_plugins.rerankers.listwise import (
    final_scores,
    parse_ranking,
    permutation_orders,
    resolve_identifiers,
    window_log_probs,
)
from rerank_plugins.rerankers.windows import window_schedule

# --------------------------------------------------------------------------- window schedules


def test_schedule_rankgpt_top100_window20_stride10():
    assert window_schedule(100, 20, 10) == [
        (80, 100), (70, 90), (60, 80), (50, 70), (40, 60), (30, 50), (20, 40), (10, 30), (0, 20)
    ]


def test_schedule_last_window_is_pulled_to_the_top():
    assert window_schedule(25, 20, 10) == [(5, 25), (0, 20)]
    assert window_schedule(21, 20, 10) == [(1, 21), (0, 20)]
    assert window_schedule(7, 3, 2) == [(4, 7), (2, 5), (0, 3)]


def test_schedule_single_window_when_everything_fits():
    assert window_schedule(20, 20, 10) == [(0, 20)]
    assert window_schedule(5, 20, 10) == [(0, 5)]
    assert window_schedule(5, 20, 10, passes=3) == [(0, 5)]  # repeating it would change nothing
    assert window_schedule(0, 20, 10) == []


def test_schedule_disjoint_windows_and_passes():
    assert window_schedule(10, 4, 4) == [(6, 10), (2, 6), (0, 4)]
    assert window_schedule(6, 4, 2, passes=2) == [(2, 6), (0, 4), (2, 6), (0, 4)]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((10, 0, 1), "window must be >= 1"),
        ((10, 4, 5), r"stride must be in \[1, window=4\]"),
        ((10, 4, 0), "stride must be in"),
        ((10, 4, 2, 0), "passes must be >= 1"),
        ((-1, 4, 2), "n must be >= 0"),
        ((10, 4.0, 2), "window must be an int"),
        ((10, 4, True), "stride must be an int"),
    ],
)
def test_schedule_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        window_schedule(*args)


# --------------------------------------------------------------------------- parsing (generate mode)

LABELS = ["A", "B", "C", "D"]
ALL = [*LABELS, "E", "F", "Z", "I"]


@pytest.mark.parametrize(
    ("text", "order", "status", "counts"),
    [
        (" C > A > D > B", [2, 0, 3, 1], "complete", (0, 0, 0, 0)),
        ("C] > [A] > [D] > [B]", [2, 0, 3, 1], "complete", (0, 0, 0, 0)),
        ("[C] [A] [D] [B]", [2, 0, 3, 1], "complete", (0, 0, 0, 0)),
        (" C, A, D, B\n\nPassage B mentions the query.", [2, 0, 3, 1], "complete", (0, 0, 0, 0)),
        (" C > C > A > D > B", [2, 0, 3, 1], "repaired", (0, 1, 0, 0)),
        (" C > Z > A > D > B", [2, 0, 3, 1], "repaired", (1, 0, 0, 0)),
        (" The best is C > A > D > B", [2, 0, 3, 1], "repaired", (0, 0, 0, 3)),
        (" D > B", [3, 1, 0, 2], "partial", (0, 0, 2, 0)),
        (" E > F > B", [1, 0, 2, 3], "partial", (2, 0, 3, 0)),
        (" 1 > 2 > 3 > 4", [0, 1, 2, 3], "failed", (0, 0, 4, 4)),
        ("", [0, 1, 2, 3], "failed", (0, 0, 4, 0)),
        (" a > b > c > d", [0, 1, 2, 3], "failed", (0, 0, 4, 4)),  # ids are case-sensitive
    ],
)
def test_parse_ranking_fixtures(text, order, status, counts):
    result = parse_ranking(text, LABELS, ALL)
    assert result.order == order
    assert result.status == status
    assert (result.out_of_range, result.duplicates, result.missing, result.free_words) == counts
    assert sorted(result.order) == list(range(len(LABELS)))


def test_parse_reads_the_first_paragraph_holding_an_id():
    result = parse_ranking("Sure, here it is.\n\n B > A > C > D\n\nA is about X.", LABELS, ALL)
    assert result.order == [1, 0, 2, 3]
    assert result.status == "complete"


# --------------------------------------------------------------------------- permutations, calibration, scores


def test_permutation_orders_are_identity_reverse_then_distinct_shuffles():
    assert permutation_orders(4, 1, seed=0) == [[0, 1, 2, 3]]
    assert permutation_orders(4, 2, seed=0) == [[0, 1, 2, 3], [3, 2, 1, 0]]
    orders = permutation_orders(5, 4, seed=3)
    assert orders[:2] == [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]]
    assert len({tuple(o) for o in orders}) == 4
    assert all(sorted(o) == list(range(5)) for o in orders)
    assert orders == permutation_orders(5, 4, seed=3)
    assert permutation_orders(5, 4, seed=4) != orders


def test_calibration_removes_a_position_prior_exactly():
    prior = torch.tensor([3.0, 1.0, 0.0])
    relevance = torch.tensor([0.0, 0.5, 0.2])  # item 1 is best
    logits = (prior + relevance).unsqueeze(0)
    raw = window_log_probs(logits, [[0, 1, 2]], None)
    assert int(torch.argmax(raw)) == 0  # the prior wins without calibration
    cal = torch.log_softmax(prior.double(), dim=-1)
    z = window_log_probs(logits, [[0, 1, 2]], cal)
    assert torch.argsort(z, descending=True).tolist() == [1, 2, 0]


def test_permutation_average_maps_positions_back_to_items():
    # Row 1 shows items in reverse order; each item's value must come from its own position.
    logits = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    z = window_log_probs(logits, [[0, 1, 2], [2, 1, 0]], None)
    assert torch.allclose(z[0], z[1]) is False
    assert int(torch.argmax(z)) == 2  # item 2 is at position 2 in row 0 and position 0 in row 1: top both times


def test_final_scores_strictly_decrease_along_the_ranking():
    ranking = [3, 0, 2, 1]
    scores = final_scores(ranking, {3: 0.1, 0: 0.9999999999, 2: 0.0, 1: 0.5})
    assert scores == [3.999, 1.5, 2.0, 4.1]
    along = [scores[d] for d in ranking]
    assert along == sorted(along, reverse=True) and len(set(along)) == 4


# --------------------------------------------------------------------------- identifiers


def _tokenizer(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    return lambda s: tok(s, add_special_tokens=False)["input_ids"]


def test_identifiers_fall_back_to_bracket_style_on_a_small_vocabulary(tiny_model):
    tokenize = _tokenizer(tiny_model)
    few = resolve_identifiers(tokenize, 3)
    assert few.style == "space"  # " A", " B" ... exist as tokens in the tiny vocabulary
    for label, t in zip(few.labels, few.token_ids, strict=True):
        assert tokenize(f"\nPassage {label}:") == tokenize("\nPassage") + [t] + tokenize(":")
        assert tokenize(f"Ranking: {label} >") == tokenize("Ranking:") + [t] + tokenize(" >")
    many = resolve_identifiers(tokenize, 20)
    assert many.style == "bracket"
    assert many.labels[:3] == ("A", "B", "C") and len(many.labels) == 52
    assert all(tokenize(label) == [t] for label, t in zip(many.labels, many.token_ids, strict=True))
    assert many.answer_prefix == "Ranking: ["


def test_identifiers_fail_clearly(tiny_model):
    tokenize = _tokenizer(tiny_model)
    with pytest.raises(ValueError, match="too few single-token identifiers for a window of 20"):
        resolve_identifiers(tokenize, 20, style="space")
    with pytest.raises(ValueError, match="window of 60"):
        resolve_identifiers(tokenize, 60)
    with pytest.raises(ValueError, match="id_style must be"):
        resolve_identifiers(tokenize, 3, style="digits")  # type: ignore[arg-type]
