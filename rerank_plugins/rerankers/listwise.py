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

Prompt length and calibration defaults. Small instruction models rank a window worse the
longer its prompt, so passages are cut to ``doc_max_tokens`` = 96 tokens here (about 2,200-token
prompts for a window of 20; the shared default of ``LLMOptions`` is 256); and calibration is off.
Both were chosen on SciFact *train* queries (40, dense MiniLM top-20, Qwen2.5-Coder-0.5B;
BENCHMARKS.md, "FIRST defaults"): uncalibrated nDCG@10 0.480 / 0.401 / 0.340 at 96 / 128 / 256
tokens (0.408 at 64), and calibration cost 0.08-0.11 at 96 and 256. Long RAG chunks keep their
full text in the results; only what the model reads is cut.

Two levers against identifier priors and position bias (both measured in BENCHMARKS.md):

* ``calibrate`` (off by default): content-free calibration ("Calibrate Before Use", Zhao et
  al., 2021). The same prompt with every passage replaced by ``"N/A"`` gives the model's prior
  for each identifier position; its log-softmax is subtracted from the real one. With
  ``calibration_query="content_free"`` the query is content-free too and the prior is cached
  per window size (free after the first call); ``"real"`` keeps the real query (one short
  extra row per query and window size; the rows of all queries at one step share one extra
  forward pass). The command line's ``calibrate=window|query|none`` still name these.
* ``permutations=k``: permutation self-consistency ("Found in the Middle: Permutation
  Self-Consistency Improves Listwise Ranking in Large Language Models", Tang et al., 2024):
  the window is scored in k orderings (its current order, the reverse, then seeded shuffles)
  and each passage's log-probabilities (calibrated if asked) are averaged. k forward rows per
  window.

Scores across windows: sliding windows (RankGPT: back to front, ``window`` passages moved by
``stride``, repeated ``passes`` times) reorder a running list; a passage's final score is
``(n - final_position) + p`` where ``p`` in [0, 1) is the passage's probability of being
ranked first in the last window that ranked it (softmax over that window's identifier
log-probabilities, calibrated if ``calibrate``, averaged over ``permutations``, rounded to 3
decimals; 0 in generate mode). The integer part makes scores from different windows
comparable; the fraction keeps the model's confidence; the score is strictly decreasing along
the final ranking.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field, StrictBool, StrictInt, StrictStr, model_validator

from rerank_plugins.options import LLMOptions, PositiveInt
from rerank_plugins.rerankers.base import ModelReranker
from rerank_plugins.rerankers.windows import window_schedule
from rerank_plugins.scoring import Document
from rerank_plugins.scoring.protocol import Capability
from rerank_plugins.types import Call

__all__ = [
    "ANSWER_PREFIX",
    "FIRST_INSTRUCTION",
    "GENERATE_INSTRUCTION",
    "IdentifierScheme",
    "ListwiseOptions",
    "ListwiseReranker",
    "ParseResult",
    "parse_ranking",
    "resolve_identifiers",
]

logger = logging.getLogger(__name__)

Mode = Literal["first", "generate"]
IdStyle = Literal["auto", "space", "bracket"]

ANSWER_PREFIX = "Ranking:"
_LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
_CONTENT_FREE = "N/A"
# No example ranking in the prompts: small models copy it (BENCHMARKS.md, listwise prompts).
#: closing instruction in first mode (the answer is read from the first token only)
FIRST_INSTRUCTION = (
    "Rank the {n} passages above from most to least relevant to the query. "
    'Answer with the identifiers only, separated by " > ", most relevant first.'
)
#: closing instruction in generate mode: it asks for letters in so many words, which small
#: models otherwise answer with numbers or passage words
GENERATE_INSTRUCTION = (
    "Now rank the {n} passages above, most relevant first. Reply with the {n} passage identifiers "
    '(letters) in ranked order, separated by " > ". Do not explain.'
)


# --------------------------------------------------------------------------- pure helpers


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


_DEFAULT_INSTRUCTION = (
    "Rank the passages below by how relevant they are to the search query. "
    "Each passage is labelled with a letter identifier."
)
_COUNTERS = ("windows", "rows", "calibration_rows", "top1_first_position", "full_ranking_fallback")
_GENERATE_COUNTERS = ("parse_complete", "parse_repaired", "parse_partial", "parse_failed",
                      "ids_out_of_range", "ids_duplicate", "ids_missing", "free_words")


class ListwiseOptions(LLMOptions):
    """Options of :class:`ListwiseReranker` (unset ones are resolved from ``mode`` and ``window``)."""

    mode: Mode = Field(
        default="first",
        description='"first": identifier logits of the first answer token, one forward pass per window; '
        '"generate": greedy RankGPT-style permutation, parsed and repaired.',
    )
    window: StrictInt = Field(
        default=20, ge=2, description="Passages per window (at most the single-token identifiers)."
    )
    stride: PositiveInt | None = Field(
        default=None, description="How far each window moves towards the top (None: window // 2)."
    )
    passes: PositiveInt = Field(default=1, description="How many back-to-front sweeps.")
    full_ranking: StrictBool = Field(
        default=False,
        description="Rank all candidates in one window when they fit the identifiers and the context, "
        "else fall back to sliding windows (counted as full_ranking_fallback).",
    )
    doc_max_tokens: PositiveInt = Field(
        default=96,
        description="Per-passage token budget; a window shows all its passages in one prompt, so this "
        "default is smaller than the other strategies' (see the module docstring).",
    )
    calibrate: StrictBool = Field(
        default=False,
        description="Subtract the content-free prior of each identifier position (first mode only; off by "
        'default, see the module docstring). None/"none" mean off, "window" and "query" on.',
    )
    calibration_query: Literal["content_free", "real"] = Field(
        default="content_free",
        description='The calibration prompt\'s query: "content_free" (cached per window size) or "real" '
        "(one short extra row per query and window size).",
    )
    permutations: PositiveInt = Field(default=1, description="Orderings averaged per window (first mode only).")
    seed: StrictInt = Field(default=0, description="Seed of the shuffled orderings.")
    instruction: StrictStr | None = Field(default=None, description="The task sentence that opens the prompt.")
    answer_instruction: StrictStr | None = Field(
        default=None,
        description="The closing request after the passages ({n} is the window size); by mode when None.",
    )
    id_style: IdStyle = Field(default="auto", description='"auto", "space" or "bracket" identifiers.')
    max_new_tokens: PositiveInt | None = Field(
        default=None, description="Generation budget in generate mode (None: 3 * window + 8)."
    )

    @model_validator(mode="before")
    @classmethod
    def _calibration_words(cls, data: Any) -> Any:
        # The text forms are the ones a command line passes; None/False/"none" always mean off.
        if not isinstance(data, dict) or "calibrate" not in data:
            return data
        data = dict(data)
        calibrate = data["calibrate"]
        if calibrate is None or calibrate is False or calibrate == "none":
            data["calibrate"] = False
        elif calibrate == "window":
            data["calibrate"] = True
        elif calibrate == "query":
            if data.get("calibration_query", "real") != "real":
                raise ValueError('calibrate="query" means calibration_query="real"')
            data["calibrate"], data["calibration_query"] = True, "real"
        return data

    @model_validator(mode="after")
    def _resolve(self) -> ListwiseOptions:
        # Unset options take their mode's value; set this way they stay out of model_fields_set,
        # so an adapter passes on only what its user chose.
        if self.stride is None:
            object.__setattr__(self, "stride", max(1, self.window // 2))
        for key in ("instruction", "answer_instruction"):
            text = getattr(self, key)
            if text is not None and not text.strip():
                raise ValueError(f"{key} must be a non-empty string or None")
        if self.instruction is None:
            object.__setattr__(self, "instruction", _DEFAULT_INSTRUCTION)
        if self.answer_instruction is None:
            closing = FIRST_INSTRUCTION if self.mode == "first" else GENERATE_INSTRUCTION
            object.__setattr__(self, "answer_instruction", closing)
        if self.stride is not None and self.stride > self.window:
            raise ValueError(f"stride must be in [1, window={self.window}], got {self.stride}")
        if self.mode == "generate" and self.calibrate:
            raise ValueError("calibrate applies to mode='first' only (generate mode has no logits to calibrate)")
        if self.mode == "generate" and self.permutations != 1:
            raise ValueError("permutations applies to mode='first' only")
        return self


class ListwiseReranker(ModelReranker):
    """Listwise LLM reranking: FIRST single-token logits (default) or generated permutations.

    Args:
        model: hub id, local folder, ``.gguf`` file, or a scoring backend (a ScoringCore, a
            served model, a test double).
        **options: see :class:`ListwiseOptions`: ``mode``, ``window``, ``stride``, ``passes``,
            ``full_ranking``, ``calibrate``, ``calibration_query``, ``permutations``, ``seed``,
            ``doc_max_tokens`` (lowered automatically for a window that would not fit the
            context), ``instruction``, ``answer_instruction``, ``id_style``, ``max_new_tokens``,
            and how the model is loaded.

    ``rerank_with_stats`` returns the call's counters: windows, rows (prompts scored),
    calibration_rows, top1_first_position (windows whose raw top identifier was the first
    passage shown), full_ranking_fallback, and in generate mode parse_complete /
    parse_repaired / parse_partial / parse_failed, ids_out_of_range, ids_duplicate,
    ids_missing, free_words.

    Example:
        >>> r = ListwiseReranker("path/to/Qwen2.5-0.5B-Instruct", window=20, stride=10)  # doctest: +SKIP
        >>> r.rerank("capital of France", ["Berlin is in Germany.", "Paris is France's capital."])  # doctest: +SKIP
        [Hit(index=1, score=2.83), Hit(index=0, score=1.17)]
    """

    name = "listwise"
    options_class = ListwiseOptions
    options: ListwiseOptions
    repr_settings = ("mode", "window", "stride")

    def _prepare(self) -> None:
        # Full ranking may use every identifier the tokenizer offers; sliding windows need `window`.
        self.ids = resolve_identifiers(self.core.tokenize, self.options.window, self.options.id_style)
        self._window_calibration: dict[int, torch.Tensor] = {}

    def _needs(self) -> tuple[Capability, ...]:
        return ("prompts", "logits") if self.options.mode == "first" else ("prompts", "generate")

    def _derived_settings(self) -> dict[str, Any]:
        return {"id_style": self.ids.style}

    def relevance(self, scores: Sequence[float]) -> list[float]:
        """First mode: the fractional part of the score, the probability that the model ranks the
        document first among the passages of the last window that ranked it (the window's
        identifier probabilities, calibrated if asked and permutation-averaged). It compares
        documents of one window; across windows and calls it is a confidence, not a calibrated
        relevance (a window of 20 spreads probability over 20 passages). Generate mode has no
        probabilities: the rank within the call, 1 for the first document down to 0 for the last
        (min-max of the scores).

        Example:
            >>> from types import SimpleNamespace
            >>> ListwiseReranker.relevance(SimpleNamespace(options=SimpleNamespace(mode="first")), [2.2, 1.0, 3.7])
            [0.2, 0.0, 0.7]
        """
        if self.options.mode == "first":
            return [round(float(s) - math.floor(float(s)), 3) if math.isfinite(float(s)) else 0.0 for s in scores]
        return super().relevance(scores)

    # ------------------------------------------------------------------ prompts
    def _prompt(self, query: str, passages: Sequence[str], doc_max_tokens: int) -> list[int]:
        ids = self.ids
        parts: list[Any] = [f"{self.options.instruction}\n\nQuery: {query}\n"]
        for j, text in enumerate(passages):
            parts += [ids.open_text, [ids.token_ids[j]], ids.close_text, Document(" " + text.strip())]
        closing = self.options.answer_instruction or ""
        parts.append(f"\n\nQuery: {query}\n" + closing.replace("{n}", str(len(passages))))
        enc = self.core.encode_chat(parts, assistant_prefix=ids.answer_prefix, doc_max_tokens=doc_max_tokens)
        return enc.input_ids

    def _answer_budget(self, w: int) -> int:
        if self.options.mode == "first":
            return 0
        return self.options.max_new_tokens or 3 * w + 8

    def _fitted_prompt(self, query: str, passages: Sequence[str]) -> list[int]:
        """The window prompt, with the per-passage budget lowered if it would not fit the context."""
        limit = int(self.core.max_length) - self._answer_budget(len(passages))
        budget = self.options.doc_max_tokens
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
        return self._prompt(query, [_CONTENT_FREE] * w, self.options.doc_max_tokens)

    # ------------------------------------------------------------------ scheduling
    def _schedule(self, query: str, docs: list[str], call: Call) -> list[tuple[int, int]]:
        n = len(docs)
        o = self.options
        if o.full_ranking and n > 1:
            if n <= len(self.ids.token_ids):
                try:
                    full = self._prompt(query, docs, o.doc_max_tokens)
                    if len(full) + self._answer_budget(n) <= self.core.max_length:
                        return [(0, n)]
                except ValueError:
                    pass
            logger.info("full ranking of %d passages does not fit; using sliding windows", n)
            call.count("full_ranking_fallback")
        return window_schedule(n, o.window, o.stride or max(1, o.window // 2), o.passes)

    def _score_call(self, queries: list[str], documents: list[list[str]], call: Call) -> list[list[float]]:
        """Rerank several queries; their windows at the same step share one forward pass."""
        counters = _COUNTERS + (_GENERATE_COUNTERS if self.options.mode == "generate" else ())
        for key in counters:
            call.stats.setdefault(key, 0.0)
        states = [
            _QueryState(q, list(d), self._schedule(q, list(d), call) if len(d) > 1 else [], list(range(len(d))))
            for q, d in zip(queries, documents, strict=True)
        ]
        step = 0
        while True:
            active = [s for s in states if step < len(s.schedule)]
            if not active:
                break
            if self.options.mode == "first":
                self._first_step(active, step, call)
            else:
                self._generate_step(active, step, call)
            call.count("windows", len(active))
            step += 1
        return [final_scores(s.ranking, s.confidence) for s in states]

    # ------------------------------------------------------------------ first mode
    def _calibration_for(self, w: int) -> torch.Tensor:
        if w not in self._window_calibration:
            row = self._calibration_prompt(_CONTENT_FREE, w)
            logits = self.core.next_token_logits([row], list(self.ids.token_ids[:w]))
            self._window_calibration[w] = torch.log_softmax(logits[0].double(), dim=-1)
        return self._window_calibration[w]

    def _first_step(self, active: list[_QueryState], step: int, call: Call) -> None:
        o = self.options
        by_query = o.calibrate and o.calibration_query == "real"
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
            orders = permutation_orders(w, o.permutations, o.seed + 7919 * step + start)
            first_row = len(rows)
            for order in orders:
                rows.append(self._fitted_prompt(st.query, [st.docs[items[j]] for j in order]))
            padded = list(self.ids.token_ids[:w]) + [self.ids.token_ids[0]] * (k_max - w)
            row_ids += [padded] * (len(rows) - first_row)
            cal_row = None
            if by_query and w not in st.calibration:
                cal_row = len(cal_rows)
                cal_rows.append(self._calibration_prompt(st.query, w))
                cal_ids.append(padded)
            plans.append((st, items, orders, first_row, cal_row))
        logits = self.core.next_token_logits(rows, row_ids)
        call.count("rows", len(rows))
        if cal_rows:
            # A call of their own: batched with the windows, these short rows would be padded to
            # the windows' length (10x their cost).
            cal_logits = self.core.next_token_logits(cal_rows, cal_ids)
            call.count("calibration_rows", len(cal_rows))
        for st, items, orders, first_row, cal_row in plans:
            w = len(items)
            start, end = st.schedule[step]
            if cal_row is not None:
                st.calibration[w] = torch.log_softmax(cal_logits[cal_row, :w].double(), dim=-1)
            cal: torch.Tensor | None = None
            if by_query:
                cal = st.calibration[w]
            elif o.calibrate:
                cal = self._calibration_for(w)
            block = logits[first_row : first_row + len(orders), :w]
            if int(torch.argmax(block[0])) == 0:
                call.count("top1_first_position")
            z = window_log_probs(block, orders, cal)
            # Stable: ties keep the window's current order.
            ranked = sorted(range(w), key=lambda i: (-float(z[i]), i))
            st.ranking[start:end] = [items[i] for i in ranked]
            p = torch.softmax(z, dim=0)
            for i in range(w):
                st.confidence[items[i]] = float(p[i])

    # ------------------------------------------------------------------ generate mode
    def _generate_step(self, active: list[_QueryState], step: int, call: Call) -> None:
        rows, windows = [], []
        for st in active:
            start, end = st.schedule[step]
            items = st.ranking[start:end]
            rows.append(self._fitted_prompt(st.query, [st.docs[i] for i in items]))
            windows.append(items)
        budget = max(self._answer_budget(len(items)) for items in windows)
        texts = self.core.generate(rows, max_new_tokens=budget)
        call.count("rows", len(rows))
        for st, items, text in zip(active, windows, texts, strict=True):
            start, end = st.schedule[step]
            w = len(items)
            result = parse_ranking(text, self.ids.labels[:w], self.ids.labels)
            call.count(f"parse_{result.status}")
            call.count("ids_out_of_range", result.out_of_range)
            call.count("ids_duplicate", result.duplicates)
            call.count("ids_missing", result.missing)
            call.count("free_words", result.free_words)
            if result.status == "failed":
                logger.info("generate mode: no identifier in %r; window kept in input order", text[:200])
            if result.order and result.order[0] == 0:
                call.count("top1_first_position")
            st.ranking[start:end] = [items[i] for i in result.order]
            for i in items:
                st.confidence[i] = 0.0
