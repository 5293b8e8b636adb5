"""PRP: pairwise ranking prompting, with all-pairs, heapsort top-k and sliding-k schedules.

Ported from "Large Language Models are Effective Text Rankers with Pairwise Ranking
Prompting" (Qin et al., 2023). The model is asked which of two passages is more relevant to
the query; the answer is read from the logits of the two answer tokens (scoring mode), and
every comparison is asked in both orders to cancel the model's position bias. When the two
orders disagree the pair is a tie (0.5 each), as in the paper; ``aggregation="soft"`` averages
the two soft probabilities instead.

The schedules (:func:`allpair`, :func:`heapsort_topk`, :func:`sliding_topk`) are pure
functions over a *batch comparator* ``compare(pairs) -> probs``: ``pairs`` is a list of
``(i, j)`` input positions and each returned float is the probability that ``i`` is more
relevant than ``j`` (``compare`` must give ``p(j, i) = 1 - p(i, j)``). A schedule hands every
comparison it can decide independently to one ``compare`` call (a *round*), so the model
comparator turns a round into as few forward passes as the core allows. They return the final
order and one score per input position consistent with that order.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from pydantic import Field

from rerank_plugins.options import LLMOptions, PositiveInt
from rerank_plugins.rerankers.base import ModelReranker, common_prefix_len
from rerank_plugins.scoring import Document
from rerank_plugins.types import Call

__all__ = [
    "ANSWER_PREFIX",
    "PROMPT_TEMPLATE",
    "Compare",
    "PairwiseOptions",
    "PairwiseReranker",
    "allpair",
    "combine_orders",
    "heapsort_topk",
    "rank_scores",
    "sliding_topk",
]

logger = logging.getLogger(__name__)

#: The PRP prompt (Qin et al., 2023, Figure 2, scoring mode); the passages are Document parts.
PROMPT_TEMPLATE = (
    'Given a query "{query}", which of the following two passages is more relevant to the query?'
    '\n\nPassage A: "{a}"\n\nPassage B: "{b}"\n\nOutput Passage A or Passage B:'
)
#: The assistant turn opens with this, so the next token is " A" or " B".
ANSWER_PREFIX = "Passage"

Compare = Callable[[Sequence[tuple[int, int]]], list[float]]
Schedule = Literal["allpair", "heapsort", "sliding"]
Aggregation = Literal["ties", "soft"]


# --------------------------------------------------------------------------- pure schedule logic


def combine_orders(p_ab: float, p_ba: float, aggregation: Aggregation = "ties") -> float:
    """Probability that ``i`` beats ``j`` from both prompt orders.

    Args:
        p_ab: P(answer "A") with ``i`` as Passage A and ``j`` as Passage B.
        p_ba: P(answer "A") with ``j`` as Passage A and ``i`` as Passage B.
        aggregation: ``"ties"``: each order votes for the passage it prefers (no vote at exactly
            0.5); 1.0 if the votes favour ``i``, 0.0 if they favour ``j``, 0.5 when they disagree
            (PRP's tie rule). ``"soft"``: the mean of ``p_ab`` and ``1 - p_ba``.

    Both rules are antisymmetric: swapping the arguments gives ``1 - result``.

    Example:
        >>> combine_orders(0.75, 0.25), combine_orders(0.75, 0.75), combine_orders(0.75, 0.5, "soft")
        (1.0, 0.5, 0.625)
    """
    if aggregation == "soft":
        return (p_ab + (1.0 - p_ba)) / 2.0
    votes = _sign(p_ab - 0.5) + _sign(0.5 - p_ba)
    return 1.0 if votes > 0 else 0.0 if votes < 0 else 0.5


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _beats(p: float, i: int, j: int) -> bool:
    """``i`` ranks above ``j``: it wins, or ties and came first in the input."""
    return p > 0.5 or (p == 0.5 and i < j)


def rank_scores(order: Sequence[int]) -> list[float]:
    """Scores aligned with input positions from a final order: ``n - rank`` (best gets ``n``).

    Example:
        >>> rank_scores([2, 0, 1])
        [2.0, 1.0, 3.0]
    """
    n = len(order)
    scores = [0.0] * n
    for rank, i in enumerate(order):
        scores[i] = float(n - rank)
    return scores


def allpair(n: int, compare: Compare) -> tuple[list[int], list[float]]:
    """PRP-Allpair: every unordered pair in one round; score = sum of win probabilities.

    Makes exactly ``n(n-1)/2`` pair comparisons (``n(n-1)`` prompts with both orders) in one
    ``compare`` call. Equal scores keep input order.

    Example:
        >>> allpair(3, lambda pairs: [1.0 if i > j else 0.0 for i, j in pairs])
        ([2, 1, 0], [0.0, 1.0, 2.0])
    """
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    scores = [0.0] * n
    if pairs:
        for (i, j), p in zip(pairs, compare(pairs), strict=True):
            scores[i] += p
            scores[j] += 1.0 - p
    order = sorted(range(n), key=lambda i: (-scores[i], i))
    return order, scores


def heapsort_topk(n: int, k: int, compare: Compare) -> tuple[list[int], list[float]]:
    """PRP-Sorting with heapsort: the best ``k`` in order, the rest below in input order.

    Heapify sifts down every node of one tree level in lock-step (their subtrees are
    disjoint, so the comparisons are independent): each step is two rounds, children against
    each other, then the better child against its parent. Each of the ``k`` extractions sifts
    the last leaf down from the root (two rounds per level); the last extraction skips it.
    Pair comparisons are at most ``2 * n + 2 * k * floor(log2 n)``. Scores: :func:`rank_scores`.

    Example:
        >>> heapsort_topk(4, 2, lambda pairs: [1.0 if i > j else 0.0 for i, j in pairs])[0]
        [3, 2, 0, 1]
    """
    if n == 0:
        return [], []
    k = min(k, n)
    heap = list(range(n))

    def sift(starts: list[int], size: int) -> None:
        active = list(starts)
        while active:
            with_two = [pos for pos in active if 2 * pos + 2 < size]
            child = {pos: 2 * pos + 1 for pos in active if 2 * pos + 1 < size}
            if with_two:
                probs = compare([(heap[2 * p + 1], heap[2 * p + 2]) for p in with_two])
                for pos, p in zip(with_two, probs, strict=True):
                    left, right = heap[2 * pos + 1], heap[2 * pos + 2]
                    child[pos] = 2 * pos + 1 if _beats(p, left, right) else 2 * pos + 2
            live = list(child)
            if not live:
                return
            probs = compare([(heap[child[pos]], heap[pos]) for pos in live])
            active = []
            for pos, p in zip(live, probs, strict=True):
                c = child[pos]
                if _beats(p, heap[c], heap[pos]):
                    heap[pos], heap[c] = heap[c], heap[pos]
                    active.append(c)

    # Heapify: levels from the deepest internal one up to the root.
    last_internal = n // 2 - 1
    if last_internal >= 0:
        depth = int(math.log2(last_internal + 1))
        for d in range(depth, -1, -1):
            lo, hi = 2**d - 1, min(2 ** (d + 1) - 2, last_internal)
            sift(list(range(lo, hi + 1)), n)
    top: list[int] = []
    size = n
    for t in range(k):
        top.append(heap[0])
        size -= 1
        heap[0] = heap[size]
        if t < k - 1 and size > 1:
            sift([0], size)
    chosen = set(top)
    order = top + [i for i in range(n) if i not in chosen]
    return order, rank_scores(order)


def sliding_topk(n: int, k: int, compare: Compare) -> tuple[list[int], list[float]]:
    """PRP-Sliding-K: ``k`` bubble passes from the bottom of the input order.

    Pass ``p`` walks from the last position up to position ``p + 1``, comparing each adjacent
    pair and swapping when the lower passage wins (a tie keeps the current order); positions
    above ``p`` are final after pass ``p``, so a pass stops there (the paper's full passes
    would re-ask settled pairs). Comparisons are sequential: one pair per round,
    ``k(n-1) - k(k-1)/2`` pair comparisons in all (``k`` capped at ``n - 1``). Scores:
    :func:`rank_scores`.

    Example:
        >>> sliding_topk(4, 1, lambda pairs: [1.0 if i > j else 0.0 for i, j in pairs])[0]
        [3, 0, 1, 2]
    """
    order = list(range(n))
    for p in range(min(k, max(n - 1, 0))):
        for pos in range(n - 2, p - 1, -1):
            upper, lower = order[pos], order[pos + 1]
            (prob,) = compare([(lower, upper)])
            if prob > 0.5:
                order[pos], order[pos + 1] = lower, upper
    return order, rank_scores(order)


# --------------------------------------------------------------------------- the model comparator


class _ModelComparator:
    """Batch comparator over the backend for one (query, documents) call, with its cache."""

    def __init__(self, reranker: PairwiseReranker, query: str, documents: list[str]) -> None:
        self.r = reranker
        core = reranker.core
        # One template encoding per call; documents are spliced in as token ids (tokenized once).
        text = PROMPT_TEMPLATE.replace("{query}", query)
        before_a, rest = text.split("{a}")
        between, after_b = rest.split("{b}")
        enc = core.encode_chat(
            [before_a, Document(""), between, Document(""), after_b], assistant_prefix=reranker.answer_prefix_ids
        )
        (sa, _), (sb, _) = enc.spans
        self.pieces = (enc.input_ids[:sa], enc.input_ids[sa:sb], enc.input_ids[sb:])
        self.docs = core.encode_documents(documents, reranker.options.doc_max_tokens)
        self.cache: dict[tuple[int, int], float] = {}  # (A, B) -> P(answer "A")
        self.comparisons = 0  # prompts actually scored
        self.cache_hits = 0
        self.rounds = 0
        self.prompt_tokens = 0

    def prompt(self, a: int, b: int) -> list[int]:
        head, mid, tail = self.pieces
        return head + self.docs[a] + mid + self.docs[b] + tail

    def __call__(self, pairs: Sequence[tuple[int, int]]) -> list[float]:
        self.rounds += 1
        needed: list[tuple[int, int]] = []
        seen: set[tuple[int, int]] = set()
        for i, j in pairs:
            for key in ((i, j), (j, i)):
                if key in self.cache or key in seen:
                    self.cache_hits += 1
                else:
                    seen.add(key)
                    needed.append(key)
        if needed:
            self._score(needed)
        aggregation = self.r.options.aggregation
        return [combine_orders(self.cache[(i, j)], self.cache[(j, i)], aggregation) for i, j in pairs]

    def _score(self, keys: list[tuple[int, int]]) -> None:
        self.comparisons += len(keys)
        groups: list[list[tuple[int, int]]] = []
        if self.r.options.prefix_reuse == "passage":
            by_a: dict[int, list[tuple[int, int]]] = {}
            for key in keys:
                by_a.setdefault(key[0], []).append(key)
            singles = [g[0] for g in by_a.values() if len(g) == 1]
            groups = [g for g in by_a.values() if len(g) > 1] + ([singles] if singles else [])
        else:
            groups = [keys]
        for group in groups:
            rows = [self.prompt(a, b) for a, b in group]
            n = common_prefix_len(rows) if len(rows) > 1 else 0
            self.prompt_tokens += n + sum(len(r) - n for r in rows)
            logits = self.r.core.next_token_logits(
                [r[n:] for r in rows], self.r.answer_ids, prefix=rows[0][:n] if n else None
            )
            probs = torch.softmax(logits, dim=1)[:, 0].tolist()
            for key, p in zip(group, probs, strict=True):
                self.cache[key] = float(p)


# --------------------------------------------------------------------------- the reranker


class PairwiseOptions(LLMOptions):
    """Options of :class:`PairwiseReranker`."""

    schedule: Schedule = Field(
        default="allpair",
        description='"allpair" (all n(n-1) prompts, score = summed win probabilities), "heapsort" (top k by a '
        'heap) or "sliding" (k bubble passes).',
    )
    k: PositiveInt = Field(
        default=10,
        description="How many top passages heapsort and sliding put in order (a call's top_k overrides it); "
        "the rest keep their input order below them.",
    )
    aggregation: Aggregation = Field(
        default="ties",
        description='"ties" (PRP: disagreeing orders make a tie) or "soft" (mean of the two orders\' probabilities).',
    )
    prefix_reuse: Literal["query", "passage"] = Field(
        default="passage",
        description='"query": a round\'s instruction+query prefix KV is computed once; "passage": prompts sharing '
        "Passage A also share its KV (fewer prompt tokens; best on CPU).",
    )


class PairwiseReranker(ModelReranker):
    """PRP pairwise reranking: both-order comparisons read from the " A"/" B" logits.

    Args:
        model: hub id, local folder, ``.gguf`` file, or a scoring backend.
        **options: see :class:`PairwiseOptions`: ``schedule``, ``k``, ``aggregation``,
            ``prefix_reuse``, ``doc_max_tokens``, and how the model is loaded.

    The caller's ``top_k`` (``rerank``, ``arerank``, ``rerank_batch``) sets how many passages
    heapsort and sliding put in order, else ``k``. ``rerank_with_stats`` returns the call's
    ``comparisons`` (prompts scored by the model), ``requested`` (prompts the schedule asked
    for, cache hits included), ``cache_hits``, ``rounds`` (comparator calls) and
    ``prompt_tokens`` (tokens sent, shared prefixes counted once per group).

    Example:
        >>> r = PairwiseReranker("path/to/Qwen2.5-0.5B-Instruct", schedule="heapsort", k=3)  # doctest: +SKIP
        >>> r.rerank("capital of France", ["Berlin is in Germany.", "Paris is France's capital."])  # doctest: +SKIP
        [Hit(index=1, score=2.0), Hit(index=0, score=1.0)]
    """

    name = "pairwise"
    options_class = PairwiseOptions
    options: PairwiseOptions
    repr_settings = ("schedule", "k", "aggregation")

    def _prepare(self) -> None:
        self.answer_prefix_ids, self.answer_ids = answer_tokens(self.core)

    def relevance(self, scores: Sequence[float]) -> list[float]:
        """``allpair``: the win share, the document's summed win probabilities over its ``n - 1``
        comparisons divided by ``n - 1`` (1.0 for a single document). ``heapsort`` and ``sliding``
        order only the top and give ranks: 1 for the first document down to 0 for the last
        (min-max of the rank scores). Either way it depends on the other documents of the call:
        comparable within one call only.

        Example:
            >>> from types import SimpleNamespace
            >>> me = SimpleNamespace(options=SimpleNamespace(schedule="allpair"))
            >>> PairwiseReranker.relevance(me, [2.0, 0.5, 0.5])
            [1.0, 0.25, 0.25]
        """
        if self.options.schedule == "allpair":
            n = len(scores)
            return [1.0 if n == 1 else float(s) / (n - 1) for s in scores]
        return super().relevance(scores)

    def _score_one(self, query: str, documents: list[str], call: Call) -> list[float]:
        k = call.top_k or self.options.k
        comparator = _ModelComparator(self, query, documents)
        n = len(documents)
        if self.options.schedule == "allpair":
            _, scores = allpair(n, comparator)
        elif self.options.schedule == "heapsort":
            _, scores = heapsort_topk(n, k, comparator)
        else:
            _, scores = sliding_topk(n, k, comparator)
        call.count("comparisons", comparator.comparisons)
        call.count("requested", comparator.comparisons + comparator.cache_hits)
        call.count("cache_hits", comparator.cache_hits)
        call.count("rounds", comparator.rounds)
        call.count("prompt_tokens", comparator.prompt_tokens)
        return scores


def answer_tokens(core: Any) -> tuple[list[int], list[int]]:
    """Ids of the answer prefix ("Passage") and of the single next tokens " A" and " B".

    Checks that "Passage A" tokenizes as "Passage" followed by the one token " A" (and the same
    for B), so the logits read after the prefix are those of the answer the prompt asks for.
    """
    prefix = core.tokenize(ANSWER_PREFIX)
    answers = []
    for letter in ("A", "B"):
        whole = core.tokenize(f"{ANSWER_PREFIX} {letter}")
        if whole[: len(prefix)] != prefix or len(whole) != len(prefix) + 1:
            raise ValueError(
                f"the tokenizer of {core.name} does not split {ANSWER_PREFIX + ' ' + letter!r} into "
                f"{ANSWER_PREFIX!r} + one token for ' {letter}'; pairwise needs single-token answers"
            )
        answers.append(whole[-1])
    return prefix, answers
