"""PRP schedules on fake comparators: exact permutations, exact comparison counts."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest

from rerank_plugins.rerankers.pairwise import (
    allpair,
    combine_orders,
    heapsort_topk,
    rank_scores,
    sliding_topk,
)
from rerank_plugins.types import hits_from_scores


class TotalOrder:
    """Comparator from hidden relevance values; records every round it is called with."""

    def __init__(self, relevance: Sequence[float]) -> None:
        self.rel = list(relevance)
        self.rounds: list[list[tuple[int, int]]] = []

    def __call__(self, pairs: Sequence[tuple[int, int]]) -> list[float]:
        self.rounds.append(list(pairs))
        return [1.0 if self.rel[i] > self.rel[j] else 0.0 if self.rel[i] < self.rel[j] else 0.5 for i, j in pairs]

    @property
    def pairs(self) -> int:
        return sum(len(r) for r in self.rounds)

    def best_first(self) -> list[int]:
        return sorted(range(len(self.rel)), key=lambda i: (-self.rel[i], i))


class Noisy(TotalOrder):
    """Intransitive, antisymmetric comparator with ties: p(i, j) drawn per unordered pair."""

    def __init__(self, n: int, seed: int) -> None:
        super().__init__([0.0] * n)
        rng = random.Random(seed)
        self.table = {(i, j): rng.choice([0.0, 0.5, 1.0, rng.random()]) for i in range(n) for j in range(i + 1, n)}

    def __call__(self, pairs: Sequence[tuple[int, int]]) -> list[float]:
        self.rounds.append(list(pairs))
        return [self.table[(i, j)] if i < j else 1.0 - self.table[(j, i)] for i, j in pairs]


def shuffled(n: int, seed: int) -> list[float]:
    rel = [float(v) for v in range(n)]
    random.Random(seed).shuffle(rel)
    return rel


def assert_consistent(order: list[int], scores: list[float], n: int) -> None:
    assert sorted(order) == list(range(n))
    assert [h.index for h in hits_from_scores(scores)] == order


# --------------------------------------------------------------------------- combine_orders


def test_combine_orders_ties_rule():
    assert combine_orders(0.8, 0.3) == 1.0  # both orders prefer i
    assert combine_orders(0.2, 0.7) == 0.0  # both prefer j
    assert combine_orders(0.8, 0.8) == 0.5  # position bias towards A: disagreement is a tie
    assert combine_orders(0.2, 0.2) == 0.5
    assert combine_orders(0.5, 0.3) == 1.0  # one order abstains, the other prefers i
    assert combine_orders(0.5, 0.5) == 0.5


@pytest.mark.parametrize("aggregation", ["ties", "soft"])
def test_combine_orders_is_antisymmetric(aggregation):
    rng = random.Random(0)
    for _ in range(200):
        a, b = rng.choice([0.5, rng.random()]), rng.choice([0.5, rng.random()])
        assert combine_orders(a, b, aggregation) + combine_orders(b, a, aggregation) == pytest.approx(1.0)


def test_combine_orders_soft():
    assert combine_orders(0.75, 0.5, "soft") == 0.625
    assert combine_orders(1.0, 0.0, "soft") == 1.0


def test_rank_scores():
    assert rank_scores([2, 0, 1]) == [2.0, 1.0, 3.0]
    assert rank_scores([]) == []


# --------------------------------------------------------------------------- allpair


@pytest.mark.parametrize("n", [0, 1, 2, 7, 20])
def test_allpair_total_order_is_exact_in_one_round(n):
    cmp = TotalOrder(shuffled(n, n))
    order, scores = allpair(n, cmp)
    assert order == cmp.best_first()
    assert len(cmp.rounds) == (1 if n > 1 else 0)
    assert cmp.pairs == n * (n - 1) // 2
    assert {frozenset(p) for r in cmp.rounds for p in r} == {frozenset((i, j)) for i in range(n) for j in range(i)}
    # score = number of passages beaten: n-1 for the best, 0 for the worst
    assert sorted(scores, reverse=True) == [float(n - 1 - r) for r in range(n)]
    assert_consistent(order, scores, n)


def test_allpair_ties_break_by_input_order():
    order, scores = allpair(4, TotalOrder([1.0, 2.0, 1.0, 2.0]))
    assert order == [1, 3, 0, 2]
    assert scores == [0.5, 2.5, 0.5, 2.5]


@pytest.mark.parametrize("seed", range(10))
def test_allpair_noisy_scores_sum_to_pair_count(seed):
    cmp = Noisy(9, seed)
    order, scores = allpair(9, cmp)
    assert_consistent(order, scores, 9)
    assert sum(scores) == pytest.approx(36.0)


# --------------------------------------------------------------------------- heapsort


@pytest.mark.parametrize(("n", "k"), [(1, 1), (2, 1), (5, 5), (7, 3), (10, 10), (20, 10), (33, 4), (100, 10)])
@pytest.mark.parametrize("seed", range(5))
def test_heapsort_total_order_top_k_exact(n, k, seed):
    rel = shuffled(n, seed)
    cmp = TotalOrder(rel)
    order, scores = heapsort_topk(n, k, cmp)
    best = cmp.best_first()
    assert order[:k] == best[:k]
    rest = set(best[k:])
    assert order[k:] == [i for i in range(n) if i in rest]  # the rest keep input order
    assert scores == rank_scores(order)
    assert_consistent(order, scores, n)
    # pair comparisons <= 2(n-1) for heapify + 2 floor(log2 n) per sift-down of k-1 extractions
    bound = 2 * (n - 1) + 2 * (k - 1) * int(math.log2(n))
    assert cmp.pairs <= bound


def test_heapsort_exact_counts_on_sorted_input():
    # n=7 already best first: heapify compares the two children of nodes 1 and 2 (one round),
    # then each better child with its parent (one round, parents win), then the same at the
    # root: 6 pairs in 4 rounds; k=1 needs no sift-down after the only extraction.
    cmp = TotalOrder([7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    order, _ = heapsort_topk(7, 1, cmp)
    assert order == [0, 1, 2, 3, 4, 5, 6]
    assert cmp.rounds == [[(3, 4), (5, 6)], [(3, 1), (5, 2)], [(1, 2)], [(1, 0)]]


def test_heapsort_exact_counts_on_reversed_input():
    # n=3, worst first: heapify compares the children (1 vs 2), then 2 vs its parent 0 (swap):
    # heap [2, 1, 0]. k=2: pop 2, the last leaf 0 moves to the root, its only child 1 wins; pop 1.
    cmp = TotalOrder([1.0, 2.0, 3.0])
    order, scores = heapsort_topk(3, 2, cmp)
    assert order == [2, 1, 0]
    assert scores == [1.0, 2.0, 3.0]
    assert cmp.rounds == [[(1, 2)], [(2, 0)], [(1, 0)]]


def test_heapsort_top10_of_100_within_ten_percent_of_allpair():
    # the target: <= 10% of allpair's n(n-1) = 9900 prompts (both orders per pair)
    worst = 0
    for seed in range(20):
        cmp = TotalOrder(shuffled(100, seed))
        order, _ = heapsort_topk(100, 10, cmp)
        assert order[:10] == cmp.best_first()[:10]
        worst = max(worst, 2 * cmp.pairs)
    assert worst <= 990
    # and within the structural bound (see the next test): 2 * (2*99 + 2*9*6) = 612 prompts
    assert worst <= 2 * (2 * 99 + 2 * 9 * 6)


@pytest.mark.parametrize("seed", range(5))
def test_heapsort_bound_holds_for_any_comparator(seed):
    # the bound is structural: an intransitive comparator with ties cannot exceed it either
    cmp = Noisy(100, seed)
    order, scores = heapsort_topk(100, 10, cmp)
    assert_consistent(order, scores, 100)
    assert cmp.pairs <= 2 * 99 + 2 * 9 * 6


def test_heapsort_heapify_batches_independent_sift_downs():
    cmp = TotalOrder(shuffled(100, 1))
    heapsort_topk(100, 1, cmp)
    # heapify of 100 nodes (depth 6) takes at most 2 rounds per level per height: sum 2h, h=1..6
    assert len(cmp.rounds) <= 2 * sum(range(1, 7))
    assert max(len(r) for r in cmp.rounds) >= 16


@pytest.mark.parametrize("seed", range(10))
def test_heapsort_noisy_is_a_permutation(seed):
    cmp = Noisy(12, seed)
    order, scores = heapsort_topk(12, 5, cmp)
    assert_consistent(order, scores, 12)


def test_heapsort_empty():
    assert heapsort_topk(0, 3, TotalOrder([])) == ([], [])


# --------------------------------------------------------------------------- sliding


@pytest.mark.parametrize(("n", "k"), [(1, 1), (2, 1), (5, 5), (7, 3), (10, 10), (20, 10)])
@pytest.mark.parametrize("seed", range(5))
def test_sliding_total_order_top_k_exact_and_counts(n, k, seed):
    cmp = TotalOrder(shuffled(n, seed))
    order, scores = sliding_topk(n, k, cmp)
    assert order[:k] == cmp.best_first()[:k]
    assert_consistent(order, scores, n)
    passes = min(k, n - 1)
    assert cmp.pairs == len(cmp.rounds) == passes * (n - 1) - passes * (passes - 1) // 2
    assert all(len(r) == 1 for r in cmp.rounds)


def test_sliding_exact_permutation():
    # one pass from the bottom carries the best (index 3) to the top; the others keep their order
    cmp = TotalOrder([2.0, 1.0, 0.0, 3.0])
    order, scores = sliding_topk(4, 1, cmp)
    assert order == [3, 0, 1, 2]
    assert scores == [3.0, 2.0, 1.0, 4.0]
    assert cmp.rounds == [[(3, 2)], [(3, 1)], [(3, 0)]]


def test_sliding_tie_keeps_order():
    cmp = TotalOrder([1.0, 1.0, 1.0])
    assert sliding_topk(3, 2, cmp)[0] == [0, 1, 2]


@pytest.mark.parametrize("seed", range(10))
def test_sliding_noisy_is_a_permutation(seed):
    cmp = Noisy(10, seed)
    order, scores = sliding_topk(10, 4, cmp)
    assert_consistent(order, scores, 10)
