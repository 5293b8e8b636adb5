"""Listwise reranking: FIRST single-token ranking, RankGPT-style generation, sliding windows.

The prompt lists the query and the window's passages, each behind a one-token identifier
("Passage A: ...", "Passage B: ..."), asks for a ranking, and opens the answer with
``"Ranking:"`` so that the next token is an identifier.

* ``mode="first"`` (default) ranks a window by the logits of each identifier as that first
  answer token: one forward pass per window, no decoding ("FIRST: Faster Improved Listwise
  Reranking with Single Token Decoding", Reddy et al., 2024; "An Early FIRST Reproduction and
  Improvements to Single-Token Decoding for Fast Listwise Reranking", Chen et al., 2024).
* ``mode="generate"`` decodes the whole permutation greedily and parses it (RankGPT, "Is
  ChatGPT Good at Search?", Sun et al., 2023); malformed output is repaired and counted.

Identifiers are checked against the tokenizer at construction: an identifier must be the
SAME single token where it is written in the prompt and where it follows the answer prefix.
The preferred style writes ``" A"`` (space + letter) in both places, which both GPT-2-like and
Qwen byte-level BPEs keep as one canonical token (Qwen merges ``"[A"`` into one token, so
bracketed ids are not used when avoidable). The fallback style writes ``"[" + A + "]"`` with
the letter inserted as a raw token id in the prompt and the answer opened with ``"Ranking: ["``:
the same token in both places, though not the tokenizer's canonical split. If neither style
gives enough single-token identifiers the constructor raises ``ValueError``.

Two levers against identifier priors and position bias (both measured in BENCHMARKS.md):

* ``calibrate``: content-free calibration ("Calibrate Before Use", Zhao et al., 2021). The
  same prompt with every passage replaced by ``"N/A"`` gives the model's prior for each
  identifier position; its log-softmax is subtracted from the real one. ``"window"`` uses a
  content-free query too and is cached per window size (free after the first call);
  ``"query"`` keeps the real query (one short extra row per query and window size; the rows
  of all queries at one step share one extra forward pass).
* ``permutations=k``: permutation self-consistency ("Found in the Middle: Permutation
  Self-Consistency Improves Listwise Ranking in Large Language Models", Tang et al., 2024):
  the window is scored in k orderings (its current order, the reverse, then seeded shuffles)
  and each passage's calibrated log-probabilities are averaged. k forward rows per window.

Scores across windows: sliding windows (RankGPT: back to front, ``window`` passages moved by
``stride``, repeated ``passes`` times) reorder a running list; a passage's final score is
``(n - final_position) + p`` where ``p`` in [0, 1) is the passage's probability of being
ranked first in the last window that ranked it (softmax over that window's calibrated,
permutation-averaged identifier log-probabilities, rounded to 3 decimals; 0 in generate mode). The integer part makes
scores from different windows comparable; the fraction keeps the model's confidence; the score
is strictly decreasing along the final ranking.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch

from rerank_plugins.rerankers._common import check_bool, check_positive_int, resolve_core
from rerank_plugins.scoring import Document, ScoringCore
from rerank_plugins.types import BaseReranker

__all__ = [
    "ANSWER_PREFIX",
    "FIRST_INSTRUCTION",
    "GENERATE_INSTRUCTION",
    "IdentifierScheme",
    "ListwiseReranker",
    "ParseResult",
    "parse_ranking",
    "resolve_identifiers",
    "window_schedule",
]

logger = logging.getLogger(__name__)

Mode = Literal["first", "generate"]
Calibration = Literal["none", "window", "query"]
IdStyle = Literal["auto", "space", "bracket"]

ANSWER_PREFIX = "Ranking:"
_LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
_CONTENT_FREE = "N/A"
# No example ranking in the prompts: small models copy examples (measured in issue 4).
#: closing instruction in first mode (the answer is read from the first token only)
FIRST_INSTRUCTION = (
    "Rank the {n} passages above from most to least relevant to the query. "
    'Answer with the identifiers only, separated by " > ", most relevant first.'
)
#: closing instruction in generate mode: Qwen2.5-0.5B answered FIRST_INSTRUCTION with numbers
#: or passage words instead of letters; this wording gets letters
GENERATE_INSTRUCTION = (
    "Now rank the {n} passages above, most relevant first. Reply with the {n} passage identifiers "
    '(letters) in ranked order, separated by " > ". Do not explain.'
)


# --------------------------------------------------------------------------- pure helpers


def window_schedule(n: int, window: int, stride: int, passes: int = 1) -> list[tuple[int, int]]:
    """Sliding windows ``(start, end)`` over ``n`` ranked items, back to front, as RankGPT does.

    The first window covers the last ``window`` items; each next one moves ``stride`` towards
    the top; the last one starts at 0. With ``n <= window`` one window covers everything
    (repeating it would give the same result, so ``passes`` does not repeat it).

    Example:
        >>> window_schedule(100, 20, 10)[:3], len(window_schedule(100, 20, 10))
        ([(80, 100), (70, 90), (60, 80)], 9)
        >>> window_schedule(25, 20, 10)
        [(5, 25), (0, 20)]
    """
    for name, value in (("n", n), ("window", window), ("stride", stride), ("passes", passes)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if window < 2:
        raise ValueError(f"window must be >= 2, got {window}")
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in [1, window={window}], got {stride}")
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    if n == 0:
        return []
    if n <= window:
        return [(0, n)]
    starts = list(range(n - window, 0, -stride))
    if not starts or starts[-1] != 0:
        starts.append(0)
    one = [(s, s + window) for s in starts]
    return one * passes


@dataclass(frozen=True)
class IdentifierScheme:
    """How identifiers are written: one token id per identifier, the same in prompt and answer.

    Attributes:
        style: ``"space"`` (``Passage A:`` / ``Ranking: A > ...``, canonical tokens) or
            ``"bracket"`` (``[A]`` with raw-id letters, answer opened with ``Ranking: [``).
        labels: identifier texts in order (``"A"``, ``"B"``, ...).
        token_ids: the single token of each identifier, aligned with ``labels``.
        open_text, close_text: text before and after the identifier token on a passage line.
        answer_prefix: text that opens the assistant turn; the next token is an identifier.
    """

    style: str
    labels: tuple[str, ...]
    token_ids: tuple[int, ...]
    open_text: str
    close_text: str
    answer_prefix: str


def resolve_identifiers(tokenize: Callable[[str], list[int]], needed: int, style: IdStyle = "auto") -> IdentifierScheme:
    """Pick identifiers that are one and the same token in the prompt and as the first answer token.

    ``"space"`` keeps a letter if ``" X"`` is one token and both ``"Passage X:"`` and
    ``"Ranking: X >"`` tokenize to ``tokens("Passage") + [t] + tokens(":")`` and
    ``tokens("Ranking:") + [t] + tokens(" >")`` (so the prompt and the answer use the
    tokenizer's own canonical split). ``"bracket"`` keeps a letter if ``"X"`` alone is one
    token (written as a raw id between ``"["`` and ``"]"``). ``"auto"`` tries space, then bracket.

    Args:
        tokenize: text -> token ids without special tokens.
        needed: how many identifiers the largest window needs.
        style: ``"auto"``, ``"space"`` or ``"bracket"``.

    Raises:
        ValueError: when the style(s) give fewer than ``needed`` identifiers.

    Example:
        >>> from transformers import AutoTokenizer  # doctest: +SKIP
        >>> tok = AutoTokenizer.from_pretrained("Qwen/Qwen2.5-0.5B-Instruct")  # doctest: +SKIP
        >>> resolve_identifiers(lambda s: tok(s, add_special_tokens=False)["input_ids"], 20).style  # doctest: +SKIP
        'space'
    """
    if style not in ("auto", "space", "bracket"):
        raise ValueError(f"id_style must be 'auto', 'space' or 'bracket', got {style!r}")
    tried: list[str] = []
    if style in ("auto", "space"):
        passage, colon = tokenize("\nPassage"), tokenize(":")
        prefix, sep = tokenize(ANSWER_PREFIX), tokenize(" >")
        labels, ids = [], []
        for c in _LETTERS:
            t = tokenize(" " + c)
            if len(t) != 1 or t[0] in ids:
                continue
            if tokenize(f"\nPassage {c}:") != passage + t + colon:
                continue
            if tokenize(f"{ANSWER_PREFIX} {c} >") != prefix + t + sep:
                continue
            labels.append(c)
            ids.append(t[0])
        if len(ids) >= needed:
            return IdentifierScheme("space", tuple(labels), tuple(ids), "\nPassage", ":", ANSWER_PREFIX)
        tried.append(f"space style: {len(ids)} single-token letters")
    if style in ("auto", "bracket"):
        labels, ids = [], []
        for c in _LETTERS:
            t = tokenize(c)
            if len(t) == 1 and t[0] not in ids:
                labels.append(c)
                ids.append(t[0])
        if len(ids) >= needed:
            return IdentifierScheme("bracket", tuple(labels), tuple(ids), "\n[", "]", ANSWER_PREFIX + " [")
        tried.append(f"bracket style: {len(ids)} single-token letters")
    raise ValueError(
        f"this tokenizer has too few single-token identifiers for a window of {needed} "
        f"({'; '.join(tried)}); use a smaller window"
    )


@dataclass(frozen=True)
class ParseResult:
    """A generated ranking parsed into a complete permutation of window positions.

    Attributes:
        order: window positions best first; always a permutation of ``range(w)``.
        status: ``"complete"`` (every id once, nothing else), ``"repaired"`` (every id, plus
            duplicates, out-of-range ids or free text), ``"partial"`` (some ids missing,
            appended in input order) or ``"failed"`` (no id found; input order kept).
        out_of_range, duplicates, missing, free_words: counts of each defect.
    """

    order: list[int]
    status: str
    out_of_range: int = 0
    duplicates: int = 0
    missing: int = 0
    free_words: int = 0


_WORD = re.compile(r"[A-Za-z0-9]+")


def parse_ranking(text: str, labels: Sequence[str], all_labels: Sequence[str] = ()) -> ParseResult:
    """Parse generated text such as ``"C > A > B"`` or ``"[C] > [A]"`` into window positions.

    Words equal to a window label are ids (first mention wins); words equal to another known
    label (``all_labels`` beyond the window) are out of range; other words are free text.
    Only the first paragraph holding an id is read (models often explain after a blank line).
    Missing ids are appended in input order.

    Example:
        >>> parse_ranking(" C > A > C > Z, done", ["A", "B", "C"], ["A", "B", "C", "Z"])
        ParseResult(order=[2, 0, 1], status='partial', out_of_range=1, duplicates=1, missing=1, free_words=1)
    """
    index = {label: i for i, label in enumerate(labels)}
    known = set(all_labels) - set(index)
    block = text  # no paragraph holds an id: read everything, so the failure's words are counted
    for para in re.split(r"\n\s*\n", text):
        if any(w in index for w in _WORD.findall(para)):
            block = para
            break
    order: list[int] = []
    seen: set[int] = set()
    oor = dups = free = 0
    for word in _WORD.findall(block):
        if word in index:
            if index[word] in seen:
                dups += 1
            else:
                seen.add(index[word])
                order.append(index[word])
        elif word in known:
            oor += 1
        else:
            free += 1
    missing = [i for i in range(len(labels)) if i not in seen]
    if not order:
        status = "failed"
    elif missing:
        status = "partial"
    elif oor or dups or free:
        status = "repaired"
    else:
        status = "complete"
    return ParseResult(order + missing, status, oor, dups, len(missing), free)


def permutation_orders(w: int, k: int, seed: int) -> list[list[int]]:
    """The k orderings of a window used by permutation self-consistency.

    Order 0 is the window as it stands, order 1 its reverse, the others seeded shuffles
    (distinct from each other and from the first two when ``w`` allows).

    Example:
        >>> permutation_orders(3, 2, seed=0)
        [[0, 1, 2], [2, 1, 0]]
    """
    orders = [list(range(w))]
    if k >= 2 and w >= 2:
        orders.append(list(reversed(range(w))))
    rng = random.Random(seed)
    tries = 0
    while len(orders) < k:
        perm = list(range(w))
        rng.shuffle(perm)
        tries += 1
        if perm not in orders or tries > 50:
            orders.append(perm)
    return orders[:k]


def window_log_probs(
    logits: torch.Tensor, orders: Sequence[Sequence[int]], calibration: torch.Tensor | None
) -> torch.Tensor:
    """Per-item identifier log-probabilities of one window, averaged over orderings.

    Args:
        logits: ``[k, w]``: row r holds the identifier logits of ordering ``orders[r]``
            (column j is the identifier at prompt position j).
        orders: ``orders[r][j]`` is the window item shown at position j in row r.
        calibration: ``[w]`` content-free log-probabilities per position, or None.

    Returns:
        ``[w]`` per item: mean over rows of ``log_softmax(row)[pos] - calibration[pos]``.

    Example:
        >>> z = window_log_probs(torch.tensor([[2.0, 0.0], [2.0, 0.0]]), [[0, 1], [1, 0]], None)
        >>> bool(z[0] == z[1])  # a pure position preference cancels over an ordering and its reverse
        True
    """
    lp = torch.log_softmax(logits.double(), dim=-1)
    if calibration is not None:
        lp = lp - calibration.double()
    w = lp.shape[1]
    out = torch.zeros(w, dtype=torch.float64)
    for r, order in enumerate(orders):
        out[torch.tensor(list(order))] += lp[r]
    return out / len(orders)


def final_scores(ranking: Sequence[int], confidence: dict[int, float]) -> list[float]:
    """Scores aligned with document indices: ``(n - position) + p``, p rounded to 3 decimals in [0, 0.999].

    The rounding makes a query scored inside a batch give the same floats as scored alone
    (batched forward passes differ in the 7th digit).

    Example:
        >>> final_scores([2, 0, 1], {2: 0.7, 0: 0.2})
        [2.2, 1.0, 3.7]
    """
    n = len(ranking)
    scores = [0.0] * n
    for pos, d in enumerate(ranking):
        p = min(max(round(float(confidence.get(d, 0.0)), 3), 0.0), 0.999)
        scores[d] = round((n - pos) + p, 3)
    return scores


# --------------------------------------------------------------------------- the reranker


@dataclass
class _QueryState:
    query: str
    docs: list[str]
    schedule: list[tuple[int, int]]
    ranking: list[int]
    confidence: dict[int, float] = field(default_factory=dict)
    calibration: dict[int, torch.Tensor] = field(default_factory=dict)


def _is_core(obj: Any) -> bool:
    return isinstance(obj, ScoringCore) or all(
        hasattr(obj, a) for a in ("encode_chat", "next_token_logits", "generate", "tokenize", "stats")
    )


class ListwiseReranker(BaseReranker):
    """Listwise LLM reranking: FIRST single-token logits (default) or generated permutations.

    Args:
        model: hub id, local folder, ``.gguf`` file, a :class:`ScoringCore`, or any object with
            the core's interface (test doubles).
        mode: ``"first"`` (identifier logits of the first answer token, one forward pass per
            window) or ``"generate"`` (greedy RankGPT-style permutation, parsed and repaired).
        window: passages per window (<= the number of single-token identifiers, 52 for most
            tokenizers).
        stride: how far each window moves towards the top (1 <= stride <= window; default
            ``window // 2``, RankGPT's 10 for a window of 20).
        passes: how many back-to-front sweeps.
        full_ranking: rank all candidates in one window when they fit the identifiers and the
            context ("Sliding Windows Are Not the End", Liu et al., 2024); otherwise fall back to
            sliding windows (logged and counted in ``last_stats["full_ranking_fallback"]``).
        calibrate: ``"window"``, ``"query"`` or ``"none"`` (also ``None`` or ``False``); the
            default ``"auto"`` is ``"window"`` in first mode and ``"none"`` in generate mode;
            ``True`` is ``"window"``. Calibration applies to first mode only (see the module
            docstring).
        permutations: orderings averaged per window (first mode only); costs k rows per window.
        seed: seed of the shuffled orderings.
        doc_max_tokens: per-passage token budget (longer passages are cut and counted); lowered
            automatically for a window that would not fit the context.
        instruction: the task sentence that opens the prompt.
        answer_instruction: the closing request after the passages (``{n}`` is replaced by the
            window size); defaults to ``FIRST_INSTRUCTION`` or ``GENERATE_INSTRUCTION`` by mode.
        id_style: ``"auto"``, ``"space"`` or ``"bracket"`` (see :func:`resolve_identifiers`).
        max_new_tokens: generation budget in generate mode (default ``3 * window + 8``).
        device, dtype, attn_implementation, trust_remote_code: passed to the shared core.

    After each call ``last_stats`` holds counters: windows, rows (prompts scored),
    calibration_rows, top1_first_position (windows whose raw top identifier was the first
    passage shown), and in generate mode parse_complete / parse_repaired / parse_partial /
    parse_failed, ids_out_of_range, ids_duplicate, ids_missing, free_words.

    Example:
        >>> r = ListwiseReranker("path/to/Qwen2.5-0.5B-Instruct", window=20, stride=10)  # doctest: +SKIP
        >>> r.rerank("capital of France", ["Berlin is in Germany.", "Paris is France's capital."])  # doctest: +SKIP
        [Hit(index=1, score=2.83), Hit(index=0, score=1.17)]
    """

    name = "listwise"

    def __init__(
        self,
        model: str | os.PathLike[str] | ScoringCore | Any,
        *,
        mode: Mode = "first",
        window: int = 20,
        stride: int | None = None,
        passes: int = 1,
        full_ranking: bool = False,
        calibrate: Calibration | Literal["auto"] | bool | None = "auto",
        permutations: int = 1,
        seed: int = 0,
        doc_max_tokens: int = 256,
        instruction: str | None = None,
        answer_instruction: str | None = None,
        id_style: IdStyle = "auto",
        max_new_tokens: int | None = None,
        device: str | None = None,
        dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None,
        attn_implementation: Literal["sdpa", "eager"] | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if mode not in ("first", "generate"):
            raise ValueError(f"mode must be 'first' or 'generate', got {mode!r}")
        if stride is None:
            stride = max(1, window // 2) if isinstance(window, int) else 1
        window_schedule(0, window, stride, passes)  # validates window, stride, passes
        check_bool("full_ranking", full_ranking)
        # None / False mean "no calibration", never "the default": the bench CLI turns the text
        # "none" into None, and `calibrate=none` once silently ran the default (window) row.
        if calibrate is None or calibrate is False:
            calibrate = "none"
        elif calibrate is True:
            calibrate = "window"
        elif calibrate == "auto":
            calibrate = "window" if mode == "first" else "none"
        if calibrate not in ("none", "window", "query"):
            raise ValueError(f"calibrate must be 'auto', 'none', 'window' or 'query', got {calibrate!r}")
        check_positive_int("permutations", permutations)
        if mode == "generate" and calibrate != "none":
            raise ValueError("calibrate applies to mode='first' only (generate mode has no logits to calibrate)")
        if mode == "generate" and permutations != 1:
            raise ValueError("permutations applies to mode='first' only")
        check_positive_int("doc_max_tokens", doc_max_tokens)
        if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
            raise ValueError("instruction must be a non-empty string or None")
        if answer_instruction is not None and (
            not isinstance(answer_instruction, str) or not answer_instruction.strip()
        ):
            raise ValueError("answer_instruction must be a non-empty string or None")
        check_positive_int("max_new_tokens", max_new_tokens, allow_none=True)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        check_bool("trust_remote_code", trust_remote_code)
        self.core: ScoringCore
        if _is_core(model):
            self.core = model  # type: ignore[assignment]  # a ScoringCore, or a test double with its interface
        else:
            self.core = resolve_core(
                model,
                device=device,
                dtype=dtype,
                attn_implementation=attn_implementation,
                trust_remote_code=trust_remote_code,
            )
        self.mode: Mode = mode
        self.window = window
        self.stride = stride
        self.passes = passes
        self.full_ranking = full_ranking
        self.calibrate: Calibration = cast(Calibration, calibrate)
        self.permutations = permutations
        self.seed = seed
        self.doc_max_tokens = doc_max_tokens
        self.instruction = instruction or (
            "Rank the passages below by how relevant they are to the search query. "
            "Each passage is labelled with a letter identifier."
        )
        self.max_new_tokens = max_new_tokens
        self.answer_instruction = answer_instruction or (FIRST_INSTRUCTION if mode == "first" else GENERATE_INSTRUCTION)
        # Full ranking may use every identifier the tokenizer offers; sliding windows need `window`.
        self.ids = resolve_identifiers(self.core.tokenize, window, id_style)
        self._window_calibration: dict[int, torch.Tensor] = {}
        self.last_stats: dict[str, float] = {}

    # ------------------------------------------------------------------ prompts
    def _prompt(self, query: str, passages: Sequence[str], doc_max_tokens: int) -> list[int]:
        ids = self.ids
        parts: list[Any] = [f"{self.instruction}\n\nQuery: {query}\n"]
        for j, text in enumerate(passages):
            parts += [ids.open_text, [ids.token_ids[j]], ids.close_text, Document(" " + text.strip())]
        parts.append(f"\n\nQuery: {query}\n" + self.answer_instruction.replace("{n}", str(len(passages))))
        enc = self.core.encode_chat(parts, assistant_prefix=ids.answer_prefix, doc_max_tokens=doc_max_tokens)
        return enc.input_ids

    def _answer_budget(self, w: int) -> int:
        if self.mode == "first":
            return 0
        return self.max_new_tokens or 3 * w + 8

    def _fitted_prompt(self, query: str, passages: Sequence[str]) -> list[int]:
        """The window prompt, with the per-passage budget lowered if it would not fit the context."""
        limit = int(self.core.max_length) - self._answer_budget(len(passages))
        budget = self.doc_max_tokens
        ids = self._prompt(query, passages, budget)
        while len(ids) > limit and budget > 8:
            over = len(ids) - limit
            budget = max(8, budget - max(1, math.ceil(over / len(passages))))
            ids = self._prompt(query, passages, budget)
        if len(ids) > limit:
            raise ValueError(
                f"a window of {len(passages)} passages does not fit the model's context of {self.core.max_length} "
                "tokens even at 8 tokens per passage; use a smaller window"
            )
        return ids

    def _calibration_prompt(self, query: str, w: int) -> list[int]:
        return self._prompt(query, [_CONTENT_FREE] * w, self.doc_max_tokens)

    # ------------------------------------------------------------------ scheduling
    def _schedule(self, query: str, docs: list[str], stats: dict[str, float]) -> list[tuple[int, int]]:
        n = len(docs)
        if self.full_ranking and n > 1:
            if n <= len(self.ids.token_ids):
                try:
                    full = self._prompt(query, docs, self.doc_max_tokens)
                    if len(full) + self._answer_budget(n) <= self.core.max_length:
                        return [(0, n)]
                except ValueError:
                    pass
            logger.info("full ranking of %d passages does not fit; using sliding windows", n)
            stats["full_ranking_fallback"] += 1
        return window_schedule(n, self.window, self.stride, self.passes)

    def score(self, query: str, documents: list[str]) -> list[float]:
        return self.score_batch([query], [documents])[0]

    def score_batch(self, queries: list[str], documents: list[list[str]]) -> list[list[float]]:
        """Rerank several queries; their windows at the same step share one forward pass."""
        stats: dict[str, float] = dict.fromkeys(("windows", "rows", "calibration_rows", "top1_first_position"), 0.0)
        stats["full_ranking_fallback"] = 0.0
        if self.mode == "generate":
            for key in ("parse_complete", "parse_repaired", "parse_partial", "parse_failed",
                        "ids_out_of_range", "ids_duplicate", "ids_missing", "free_words"):
                stats[key] = 0.0
        states = [
            _QueryState(q, list(d), self._schedule(q, list(d), stats) if len(d) > 1 else [], list(range(len(d))))
            for q, d in zip(queries, documents, strict=True)
        ]
        step = 0
        while True:
            active = [s for s in states if step < len(s.schedule)]
            if not active:
                break
            if self.mode == "first":
                self._first_step(active, step, stats)
            else:
                self._generate_step(active, step, stats)
            stats["windows"] += len(active)
            step += 1
        self.last_stats = stats
        return [final_scores(s.ranking, s.confidence) for s in states]

    # ------------------------------------------------------------------ first mode
    def _calibration_for(self, w: int) -> torch.Tensor:
        if w not in self._window_calibration:
            row = self._calibration_prompt(_CONTENT_FREE, w)
            logits = self.core.next_token_logits([row], list(self.ids.token_ids[:w]))
            self._window_calibration[w] = torch.log_softmax(logits[0].double(), dim=-1)
        return self._window_calibration[w]

    def _first_step(self, active: list[_QueryState], step: int, stats: dict[str, float]) -> None:
        rows: list[list[int]] = []
        row_ids: list[list[int]] = []
        cal_rows: list[list[int]] = []
        cal_ids: list[list[int]] = []
        plans: list[tuple[_QueryState, list[int], list[list[int]], int, int | None]] = []
        k_max = max(e - s for st in active for s, e in [st.schedule[step]])
        for st in active:
            start, end = st.schedule[step]
            items = st.ranking[start:end]
            w = len(items)
            orders = permutation_orders(w, self.permutations, self.seed + 7919 * step + start)
            first_row = len(rows)
            for order in orders:
                rows.append(self._fitted_prompt(st.query, [st.docs[items[j]] for j in order]))
            padded = list(self.ids.token_ids[:w]) + [self.ids.token_ids[0]] * (k_max - w)
            row_ids += [padded] * (len(rows) - first_row)
            cal_row = None
            if self.calibrate == "query" and w not in st.calibration:
                cal_row = len(cal_rows)
                cal_rows.append(self._calibration_prompt(st.query, w))
                cal_ids.append(padded)
            plans.append((st, items, orders, first_row, cal_row))
        logits = self.core.next_token_logits(rows, row_ids)
        stats["rows"] += len(rows)
        if cal_rows:
            # A call of their own: batched with the windows, these short rows would be padded to
            # the windows' length (10x their cost).
            cal_logits = self.core.next_token_logits(cal_rows, cal_ids)
            stats["calibration_rows"] += len(cal_rows)
        for st, items, orders, first_row, cal_row in plans:
            w = len(items)
            start, end = st.schedule[step]
            if cal_row is not None:
                st.calibration[w] = torch.log_softmax(cal_logits[cal_row, :w].double(), dim=-1)
            if self.calibrate == "window":
                cal: torch.Tensor | None = self._calibration_for(w)
            elif self.calibrate == "query":
                cal = st.calibration[w]
            else:
                cal = None
            block = logits[first_row : first_row + len(orders), :w]
            if int(torch.argmax(block[0])) == 0:
                stats["top1_first_position"] += 1
            z = window_log_probs(block, orders, cal)
            # Stable: ties keep the window's current order.
            ranked = sorted(range(w), key=lambda i: (-float(z[i]), i))
            st.ranking[start:end] = [items[i] for i in ranked]
            p = torch.softmax(z, dim=0)
            for i in range(w):
                st.confidence[items[i]] = float(p[i])

    # ------------------------------------------------------------------ generate mode
    def _generate_step(self, active: list[_QueryState], step: int, stats: dict[str, float]) -> None:
        rows, windows = [], []
        for st in active:
            start, end = st.schedule[step]
            items = st.ranking[start:end]
            rows.append(self._fitted_prompt(st.query, [st.docs[i] for i in items]))
            windows.append(items)
        budget = max(self._answer_budget(len(items)) for items in windows)
        texts = self.core.generate(rows, max_new_tokens=budget)
        stats["rows"] += len(rows)
        for st, items, text in zip(active, windows, texts, strict=True):
            start, end = st.schedule[step]
            w = len(items)
            result = parse_ranking(text, self.ids.labels[:w], self.ids.labels)
            stats[f"parse_{result.status}"] += 1
            stats["ids_out_of_range"] += result.out_of_range
            stats["ids_duplicate"] += result.duplicates
            stats["ids_missing"] += result.missing
            stats["free_words"] += result.free_words
            if result.status == "failed":
                logger.info("generate mode: no identifier in %r; window kept in input order", text[:200])
            if result.order and result.order[0] == 0:
                stats["top1_first_position"] += 1
            st.ranking[start:end] = [items[i] for i in result.order]
            for i in items:
                st.confidence[i] = 0.0

    # ------------------------------------------------------------------ reporting
    def _repr_args(self) -> str:
        return f"{self.core.name!r}, mode={self.mode!r}, window={self.window}, stride={self.stride}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.core.name,
            "dtype": str(self.core.dtype).removeprefix("torch."),
            "mode": self.mode,
            "window": self.window,
            "stride": self.stride,
            "passes": self.passes,
            "full_ranking": self.full_ranking,
            "calibrate": self.calibrate,
            "permutations": self.permutations,
            "id_style": self.ids.style,
            "doc_max_tokens": self.doc_max_tokens,
        }
