"""Query decomposition: sub-questions, pooled retrieval, one rerank against the original question.

A multi-hop question ("Which company among NVIDIA, Apple and Google made the biggest profit in
2023?") has its evidence spread over several documents; one query embedding finds only part of
it. The pipeline here:

1. :class:`Decomposer` asks an LLM for at most ``max_subquestions`` sub-questions and parses
   whatever comes back (:func:`parse_subquestions`: numbered lists, bullets, JSON, plain lines,
   code fences, chatter). It never raises on bad model output: an empty or unusable answer
   falls back to the original question, flagged in the :class:`Decomposition`.
2. The original question and every sub-question are sent to a retriever (one batched call
   where the retriever allows it).
3. :func:`fuse` merges the rankings (reciprocal rank fusion by default; ``"max"`` score or
   ``"none"`` = first-seen order), deduplicates by document id and keeps a per-document trace
   of which query found it at which rank (:class:`Provenance`).
4. :func:`rerank_pool` reranks the pool against the ORIGINAL question with any
   :class:`~rerank_plugins.types.Reranker`.

:class:`DecompositionRetriever` chains the four steps over any retriever with a batched
``search(queries, k)`` (a :class:`~rerank_plugins.retrieval.FaissIndex` works as is). The
LlamaIndex and LangChain faces live in the integration packages.

Reciprocal rank fusion: Cormack, Clarke and Buettcher, "Reciprocal Rank Fusion outperforms
Condorcet and individual Rank Learning Methods", SIGIR 2009 (``1 / (k + rank)``, ``k = 60``).

Example:
    >>> from rerank_plugins.decomposition import Decomposer, DecompositionRetriever
    >>> from rerank_plugins.testing import KeywordReranker
    >>> docs = {"n": "NVIDIA profit 2023 was 30B", "a": "Apple profit 2023 was 97B", "x": "Apples are red"}
    >>> def search(queries, k):  # any batched retriever: list of queries -> rankings
    ...     return [sorted(((i, float(sum(w in t.lower() for w in q.lower().split())), t)
    ...                     for i, t in docs.items()), key=lambda r: -r[1])[:k] for q in queries]
    >>> llm = lambda prompt: "1. NVIDIA profit 2023\\n2. Apple profit 2023"
    >>> pipe = DecompositionRetriever(search, decomposer=Decomposer(llm), reranker=KeywordReranker(), k=2)
    >>> result = pipe.retrieve("Which made more profit in 2023, NVIDIA or Apple?")
    >>> result.decomposition.sub_questions
    ('NVIDIA profit 2023', 'Apple profit 2023')
    >>> sorted(d.id for d in result.documents)
    ['a', 'n']
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from rerank_plugins.text import clean_text
from rerank_plugins.types import Reranker, validate_query, validate_top_k

if TYPE_CHECKING:
    from rerank_plugins.scoring import ScoringCore

__all__ = [
    "DEFAULT_PROMPT",
    "BatchRetriever",
    "Decomposer",
    "Decomposition",
    "DecompositionResult",
    "DecompositionRetriever",
    "FusionMethod",
    "PooledDocument",
    "Provenance",
    "arerank_pool",
    "as_batch_retriever",
    "fuse",
    "normalize_question",
    "parse_subquestions",
    "query_list",
    "rerank_pool",
]

logger = logging.getLogger(__name__)

FusionMethod = Literal["rrf", "max", "none"]
_FUSION_METHODS = ("rrf", "max", "none")

DEFAULT_PROMPT = (
    "Break the question into at most {n} short search queries that together find the facts "
    "needed to answer it. Write one query per line, numbered. Each query must name the people, "
    "places or things it is about.\n\n"
    "Example:\n"
    "Question: Which company made the bigger profit in 2023, NVIDIA or Apple?\n"
    "1. What was NVIDIA's profit in 2023?\n"
    "2. What was Apple's profit in 2023?\n\n"
    "Question: {question}"
)

# --------------------------------------------------------------------------- parsing

_FENCE = re.compile(r"^\s*```[\w+-]*\s*$")
# One leading list marker: bullets, "1.", "(2)", "3)", "a)", "Q1:", "Sub-question 2:", "Query 1 -", "Step 1:".
_MARKER = re.compile(
    r"""^\s*(?:
        [-*\u2022+>#]+ |
        \(?\d{1,2}\s*[.):\]]+ |
        \(?[a-hA-H][.)]\s |
        (?:q|query|queries|questions?|sub[-\s]?(?:questions?|queries?|q)|step|hop)\s*\#?\d{0,2}\s*[:.)\-\u2013]
    )\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_LIST_ITEM = re.compile(r"^\s*(?:[-*\u2022]|\(?\d{1,2}[.)])\s")
_INLINE_NUMBERED = re.compile(r"(?:(?<=[?.!:])|(?<=\?\"))\s+(?=\(?\d{1,2}[.)]\s)")
_SPLIT_QUESTIONS = re.compile(r"(?<=\?)\s+(?=[A-Z0-9\"'])")
_CHATTER = re.compile(
    r"^(?:sure|ok(?:ay)?|certainly|of course|here(?:'s| is| are)|i (?:will|can|would|'ll)|let me|let's|"
    r"note|these|the following|the (?:sub[-\s]?)?(?:questions|queries) (?:are|is)|answer\s*:|final answer|"
    r"to answer|in order to|i hope|hope this|sorry|unfortunately|as an ai|"
    r"i (?:cannot|can't|can not|am unable|'m unable|am sorry|'m sorry|don't|do not))\b",
    re.IGNORECASE,
)
_SPECIAL_TOKEN = re.compile(r"<\|[^|>]{1,40}\|>|</?s>|\[/?INST\]")
_JSON_KEYS = ("sub_questions", "subquestions", "sub-questions", "questions", "queries", "sub_queries", "steps")
_ITEM_KEYS = ("question", "sub_question", "subquestion", "query", "text")
MAX_ITEM_CHARS = 400


def normalize_question(text: str) -> str:
    """Lower-case, drop punctuation, collapse spaces: the key used to deduplicate questions.

    Example:
        >>> normalize_question("  Who  founded Apple?! ")
        'who founded apple'
    """
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _strip_item(text: str) -> str:
    s = text.strip()
    for _ in range(4):  # "1. Sub-question 1: ..." carries two markers
        new = _MARKER.sub("", s, count=1).strip()
        if new == s:
            break
        s = new
    s = s.strip().strip("*_`").strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        s = s[1:-1].strip()
    s = s.rstrip(",;").strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        s = s[1:-1].strip()
    return s


def _json_items(text: str) -> list[str] | None:
    """Items of the first JSON array/object found in ``text``; ``None`` if there is none."""
    starts = [i for i in (text.find("["), text.find("{")) if i >= 0]
    if not starts:
        return None
    start = min(starts)
    end = max(text.rfind("]"), text.rfind("}"))
    if end <= start:
        return None
    try:
        data = json.loads(text[start : end + 1])
    except (ValueError, RecursionError):
        return None
    return _items_from_json(data)


def _items_from_json(data: Any) -> list[str] | None:
    if isinstance(data, dict):
        lowered = {str(k).lower(): v for k, v in data.items()}
        for key in _JSON_KEYS:
            if key in lowered:
                return _items_from_json(lowered[key])
        for key in _ITEM_KEYS:
            if isinstance(lowered.get(key), str):
                return [lowered[key]]
        lists = [v for v in data.values() if isinstance(v, list)]
        if lists:
            return _items_from_json(lists[0])
        strings = [v for v in data.values() if isinstance(v, str)]
        return strings or None
    if isinstance(data, list):
        out: list[str] = []
        for item in data:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict):
                lowered = {str(k).lower(): v for k, v in item.items()}
                for key in _ITEM_KEYS:
                    if isinstance(lowered.get(key), str):
                        out.append(lowered[key])
                        break
        return out
    return None


def _line_items(text: str) -> list[str]:
    items: list[str] = []
    for raw in text.splitlines():
        if _FENCE.match(raw):
            continue
        line = raw.strip()
        if not line:
            continue
        # "1. A? 2. B?" on one line, then "A? B?" on one line.
        for part in _INLINE_NUMBERED.split(line):
            items.extend(_SPLIT_QUESTIONS.split(part))
    return items


def _names(text: str) -> set[str]:
    """Lower-cased names and numbers in ``text``: capitalised words after the first word, and numbers."""
    words = re.findall(r"[^\W_]+", text)
    return {w.lower() for w in words[1:] if w[0].isupper() or w[0].isdigit()}


def _names_only_the_question(item: str, question_words: set[str]) -> bool:
    """True when ``item`` names something and everything it names is in the question.

    An echoed prompt line is dropped, but the prompt's own example sub-questions are right for
    a question about the example's subject ("What was NVIDIA's profit in 2023?" answers part of
    "Which made more profit in 2023, NVIDIA or Apple?"), and for no other question.
    """
    names = _names(item)
    return any(not n.isdigit() for n in names) and names <= question_words


def _usable(item: str, *, original: str, echoes: set[str], ignore: set[str], examples: set[str]) -> bool:
    if not item or len(item) > MAX_ITEM_CHARS:
        return False
    norm = normalize_question(item)
    if not norm or norm in echoes:
        return False
    if norm in ignore and not (norm in examples and _names_only_the_question(item, set(original.split()))):
        return False
    if item[0] in "{[<":  # broken JSON or markup, not a query
        return False
    if len(re.findall(r"[^\W\d_]+", item)) < 2:  # fewer than two words: "1.", "Yes", "???"
        return False
    if item.lower().startswith(("answer", "final answer")):
        return False
    return "?" in item or not (item.endswith(":") or _CHATTER.match(item))


def parse_subquestions(
    text: object,
    *,
    question: str | None = None,
    max_subquestions: int | None = None,
    ignore: Iterable[str] = (),
) -> list[str]:
    """Sub-questions found in an LLM answer, cleaned, deduplicated, at most ``max_subquestions``.

    Accepts numbered or bulleted lists, ``Sub-question 1:`` prefixes, JSON arrays or objects
    (``{"sub_questions": [...]}``), code fences, plain lines and several questions on one line.
    Drops chatter ("Here are the sub-questions:"), headers, one-word fragments, lines longer than
    ``MAX_ITEM_CHARS``, repeats of ``question`` and of any line in ``ignore`` (e.g. the prompt,
    when a model echoes it). A numbered or bulleted ``ignore`` line (an example sub-question of
    the prompt) is kept when every name in it (capitalised words, numbers) is in ``question``:
    it is then a right answer for a question about the example's subject, not an echo. Lone
    surrogates become U+FFFD (:func:`rerank_plugins.text.clean_text`).
    Never raises; anything unusable gives ``[]``.

    Args:
        text: the model output (anything that is not a string gives ``[]``).
        question: the original question; sub-questions equal to it are dropped.
        max_subquestions: keep at most this many (``None``: all).
        ignore: lines to drop (compared after :func:`normalize_question`).

    Example:
        >>> parse_subquestions("Sure! Here:\\n1. Who directed Jaws?\\n2) When was he born?\\n- who directed Jaws")
        ['Who directed Jaws?', 'When was he born?']
        >>> parse_subquestions('```json\\n["Where is Paris?", "Where is Rome?"]\\n```', max_subquestions=1)
        ['Where is Paris?']
    """
    if not isinstance(text, str) or not text.strip():
        return []
    if isinstance(question, str):
        question = clean_text(question)
    original = normalize_question(question) if isinstance(question, str) else ""
    ignored = {normalize_question(f(x)) for x in ignore if isinstance(x, str) for f in (str, _strip_item)}
    ignored.discard("")
    # Numbered or bulleted ignored lines are the prompt's example sub-questions (see _usable).
    examples = {normalize_question(_strip_item(x)) for x in ignore if isinstance(x, str) and _LIST_ITEM.match(x)}
    # The question itself, and "Question: <question>", an echo of the prompt's last line.
    echoes = {original, normalize_question("Question: " + question)} if original and question else set()
    text = _SPECIAL_TOKEN.sub("\n", text)
    items = _json_items(text)
    if not items:
        items = _line_items(text)
    out: list[str] = []
    seen: set[str] = set()
    for raw in items:
        if not isinstance(raw, str):
            continue
        # per item, since JSON escapes ("\\ud800") decode to lone surrogates too
        item = _strip_item(clean_text(raw))
        if _CHATTER.match(item) and ":" in item:  # "Here is the first one: Who is X?"
            item = _strip_item(item.split(":", 1)[1])
        if not _usable(item, original=original, echoes=echoes, ignore=ignored, examples=examples):
            continue
        key = normalize_question(item)
        if key in seen:
            continue
        seen.add(key)
        out.append(item)
        if max_subquestions is not None and len(out) >= max_subquestions:
            break
    return out


# --------------------------------------------------------------------------- decomposer


@dataclass(frozen=True, slots=True)
class Decomposition:
    """The outcome of decomposing one question.

    Attributes:
        question: the original question.
        sub_questions: the parsed sub-questions; ``(question,)`` when ``fallback`` is true.
        fallback: true when the model gave nothing usable and the original question stands in.
        reason: why the fallback happened (``""`` otherwise).
        raw: the model's raw output (``""`` when none).
    """

    question: str
    sub_questions: tuple[str, ...]
    fallback: bool = False
    reason: str = ""
    raw: str = ""

    @classmethod
    def trivial(cls, question: str, reason: str = "no decomposer") -> Decomposition:
        """The fallback decomposition: the question alone."""
        return cls(question, (question,), True, reason, "")


def query_list(decomposition: Decomposition, *, include_original: bool = True) -> list[str]:
    """The queries to retrieve with: the original question first, then the sub-questions, deduplicated.

    Example:
        >>> query_list(Decomposition("Q?", ("a b?", "q")))
        ['Q?', 'a b?']
    """
    queries = [decomposition.question] if include_original or decomposition.fallback else []
    seen = {normalize_question(q) for q in queries}
    for q in decomposition.sub_questions:
        key = normalize_question(q)
        if key not in seen:
            seen.add(key)
            queries.append(q)
    return queries or [decomposition.question]


Complete = Callable[[str], str]
AComplete = Callable[[str], Awaitable[str]]


class Decomposer:
    """Asks an LLM for sub-questions and parses them robustly.

    Args:
        llm: the shared scoring core (or a model name / folder resolved through
            :func:`rerank_plugins.scoring.get_core`), or any callable ``prompt -> text``; wrap a
            LlamaIndex LLM as ``lambda p: llm.complete(p).text`` and a LangChain chat model as
            ``lambda p: model.invoke(p).content`` (the integration packages do this for you).
        max_subquestions: at most this many sub-questions are kept.
        prompt: template with ``{question}`` and optionally ``{n}`` (= ``max_subquestions``).
        system: system message for the core's chat template.
        max_new_tokens: generation budget (core only).
        assistant_prefix: text the core's answer is forced to start with (``"1."`` steers
            small models into a numbered list; it is prepended to the output before parsing).
        acomplete: optional async callable ``prompt -> text`` used by :meth:`adecompose`.
        on_error: ``"raise"`` (default) re-raises exceptions of the LLM call; ``"fallback"``
            logs them and falls back to the original question. Bad *output* never raises.

    Example:
        >>> d = Decomposer(lambda prompt: "1. Who wrote Dune?\\n2. When was Dune published?")
        >>> d.decompose("When was the book by the author of Dune published?").sub_questions
        ('Who wrote Dune?', 'When was Dune published?')
        >>> Decomposer(lambda prompt: "I cannot help.").decompose("Who wrote Dune?").fallback
        True
    """

    def __init__(
        self,
        llm: str | os.PathLike[str] | ScoringCore | Complete,
        *,
        max_subquestions: int = 3,
        prompt: str = DEFAULT_PROMPT,
        system: str | None = None,
        max_new_tokens: int = 64,
        assistant_prefix: str = "1.",
        acomplete: AComplete | None = None,
        on_error: Literal["raise", "fallback"] = "raise",
    ) -> None:
        if isinstance(max_subquestions, bool) or not isinstance(max_subquestions, int) or max_subquestions < 1:
            raise ValueError(f"max_subquestions must be a positive int, got {max_subquestions!r}")
        if not isinstance(prompt, str) or "{question}" not in prompt:
            raise ValueError("prompt must be a string containing '{question}'")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        if on_error not in ("raise", "fallback"):
            raise ValueError(f"on_error must be 'raise' or 'fallback', got {on_error!r}")
        if acomplete is not None and not callable(acomplete):
            raise ValueError("acomplete must be an async callable prompt -> text")
        self.core: ScoringCore | None = None
        self.complete: Complete | None = None
        if isinstance(llm, (str, os.PathLike)) or _is_core(llm):
            from rerank_plugins.scoring import get_core

            self.core = get_core(llm)  # type: ignore[arg-type]
        elif callable(llm):
            self.complete = llm
        else:
            raise ValueError(
                "llm must be a ScoringCore, a model name or folder, or a callable prompt -> text; "
                f"got {type(llm).__name__}"
            )
        self.acomplete = acomplete
        self.max_subquestions = max_subquestions
        self.prompt = prompt
        self.system = system
        self.max_new_tokens = max_new_tokens
        self.assistant_prefix = assistant_prefix if self.core is not None else ""
        self.on_error = on_error
        # Lines of the instruction a model may echo back; they are never sub-questions.
        self._ignore = [ln for ln in prompt.replace("{n}", str(max_subquestions)).splitlines() if "{" not in ln]

    def render(self, question: str) -> str:
        """The prompt text for ``question``."""
        return self.prompt.replace("{n}", str(self.max_subquestions)).replace("{question}", question)

    def parse(self, question: str, raw: object) -> Decomposition:
        """Turn a raw model answer into a :class:`Decomposition` (never raises on bad output)."""
        if not isinstance(raw, str):
            return Decomposition(question, (question,), True, f"model returned {type(raw).__name__}, not text", "")
        text = self.assistant_prefix + raw if self.assistant_prefix else raw
        if not raw.strip():
            return Decomposition(question, (question,), True, "empty output", raw)
        subs = parse_subquestions(text, question=question, max_subquestions=self.max_subquestions, ignore=self._ignore)
        if not subs:
            logger.info("no usable sub-question in %r; falling back to the question", raw[:200])
            return Decomposition(question, (question,), True, "no usable sub-question", raw)
        return Decomposition(question, tuple(subs), False, "", raw)

    def _failed(self, question: str, exc: BaseException) -> Decomposition:
        if self.on_error == "raise":
            raise exc
        logger.warning("decomposition LLM call failed (%s); falling back to the question", exc)
        return Decomposition(question, (question,), True, f"llm error: {type(exc).__name__}: {exc}", "")

    def decompose(self, question: str) -> Decomposition:
        """Sub-questions for ``question`` (one LLM call)."""
        return self.decompose_batch([question])[0]

    def decompose_batch(self, questions: Sequence[str]) -> list[Decomposition]:
        """Sub-questions for several questions; with the core, one batched generation.

        Example:
            >>> d = Decomposer(lambda p: "- a first query\\n- a second query", max_subquestions=1)
            >>> [x.sub_questions for x in d.decompose_batch(["q one?", "q two?"])]
            [('a first query',), ('a first query',)]
        """
        qs = [validate_query(q) for q in questions]
        if not qs:
            return []
        if self.core is not None:
            prompts = [
                self.core.encode_chat(
                    [self.render(q)], system=self.system, assistant_prefix=self.assistant_prefix
                ).input_ids
                for q in qs
            ]
            try:
                raws: list[object] = list(self.core.generate(prompts, max_new_tokens=self.max_new_tokens))
            except Exception as exc:
                return [self._failed(q, exc) for q in qs]
            return [self.parse(q, r) for q, r in zip(qs, raws, strict=True)]
        out = []
        assert self.complete is not None
        for q in qs:
            try:
                raw = self.complete(self.render(q))
            except Exception as exc:
                out.append(self._failed(q, exc))
                continue
            out.append(self.parse(q, raw))
        return out

    async def adecompose(self, question: str) -> Decomposition:
        """Async :meth:`decompose`: ``acomplete`` when given, else a worker thread."""
        question = validate_query(question)
        if self.acomplete is None:
            return await asyncio.to_thread(self.decompose, question)
        try:
            pending: Any = self.acomplete(self.render(question))
            raw: object = await pending if inspect.isawaitable(pending) else pending
        except Exception as exc:
            return self._failed(question, exc)
        return self.parse(question, raw)

    def __repr__(self) -> str:
        llm = self.core.name if self.core is not None else getattr(self.complete, "__name__", "callable")
        return f"Decomposer({llm!r}, max_subquestions={self.max_subquestions})"

    def describe(self) -> dict[str, Any]:
        """Settings, for benchmark reports."""
        return {
            "llm": self.core.name if self.core is not None else "callable",
            "max_subquestions": self.max_subquestions,
            "max_new_tokens": self.max_new_tokens,
            "assistant_prefix": self.assistant_prefix,
        }


def _is_core(obj: object) -> bool:
    # Avoid importing torch for callables: only look at the class name chain.
    return any(c.__name__ == "ScoringCore" for c in type(obj).__mro__)


# --------------------------------------------------------------------------- fusion


@dataclass(frozen=True, slots=True)
class Provenance:
    """One query that retrieved a document: its position in the query list, text, rank (1-based), score."""

    query_index: int
    query: str
    rank: int
    score: float


@dataclass(frozen=True, slots=True)
class PooledDocument:
    """A document of the fused pool.

    Attributes:
        id: the retriever's document id (the deduplication key).
        text: the document text (from its first retrieval).
        fused_score: the fusion score (RRF sum, max retrieval score, or minus the first-seen position).
        found_by: every query that retrieved it, in query order.
        rerank_score: the reranker's score against the original question (``None`` before reranking).
        payload: whatever object the retriever returned (a framework node or document), untouched.
    """

    id: str
    text: str
    fused_score: float
    found_by: tuple[Provenance, ...]
    rerank_score: float | None = None
    payload: Any = field(default=None, compare=False, repr=False)

    @property
    def score(self) -> float:
        """The rerank score when reranked, else the fusion score."""
        return self.rerank_score if self.rerank_score is not None else self.fused_score

    def trace(self) -> list[dict[str, Any]]:
        """``found_by`` as plain dicts (for metadata)."""
        return [
            {"query_index": p.query_index, "query": p.query, "rank": p.rank, "score": p.score} for p in self.found_by
        ]


def _as_item(item: Any, where: str) -> tuple[str, float, str, Any]:
    if isinstance(item, (tuple, list)):
        if len(item) not in (3, 4):
            raise ValueError(f"{where} must be (id, score, text) or (id, score, text, payload), got {len(item)} fields")
        doc_id, score, text = item[0], item[1], item[2]
        payload = item[3] if len(item) == 4 else None
    elif all(hasattr(item, a) for a in ("id", "score", "text")):
        doc_id, score, text, payload = item.id, item.score, item.text, item
    else:
        raise ValueError(f"{where} must be an (id, score, text) tuple or have .id, .score and .text")
    if not isinstance(text, str):
        raise ValueError(f"{where}: text must be a str, got {type(text).__name__}")
    try:
        fscore = float(score) if score is not None else float("nan")
    except (TypeError, ValueError):
        raise ValueError(f"{where}: score must be a number, got {score!r}") from None
    return str(doc_id), fscore, text, payload


def fuse(
    rankings: Sequence[Sequence[Any]],
    *,
    queries: Sequence[str] | None = None,
    method: FusionMethod = "rrf",
    rrf_k: int = 60,
) -> list[PooledDocument]:
    """Merge several rankings into one pool, deduplicated by id, with a per-document trace.

    Args:
        rankings: one ranking per query, best first; items are ``(id, score, text)``,
            ``(id, score, text, payload)`` or objects with ``id``, ``score`` and ``text``. An
            id repeated inside one ranking counts at its best rank.
        queries: the query of each ranking (for the trace); default ``""``.
        method: ``"rrf"``: sum of ``1 / (rrf_k + rank)``; ``"max"``: the highest retrieval
            score (only meaningful when every ranking comes from the same retriever);
            ``"none"``: no fusion, first-seen order (query 0's ranking, then new documents of
            query 1, ...), fused score = minus that position.
        rrf_k: the RRF constant (60 in the paper).

    Returns:
        Pooled documents, best fused score first; ties keep first-seen order.

    Example:
        >>> pool = fuse([[("a", 0.9, "A"), ("b", 0.8, "B")], [("b", 0.7, "B"), ("c", 0.6, "C")]])
        >>> [(d.id, round(d.fused_score, 5)) for d in pool]
        [('b', 0.03252), ('a', 0.01639), ('c', 0.01613)]
        >>> [(p.query_index, p.rank) for p in pool[0].found_by]
        [(0, 2), (1, 1)]
    """
    if method not in _FUSION_METHODS:
        raise ValueError(f"method must be one of {', '.join(_FUSION_METHODS)}; got {method!r}")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, (int, float)) or rrf_k < 0:
        raise ValueError(f"rrf_k must be a non-negative number, got {rrf_k!r}")
    if isinstance(rankings, (str, bytes)) or not isinstance(rankings, Sequence):
        raise ValueError("rankings must be a sequence of rankings (one per query)")
    if queries is not None and len(queries) != len(rankings):
        raise ValueError(f"queries has {len(queries)} entries for {len(rankings)} rankings")
    order: list[str] = []
    texts: dict[str, str] = {}
    payloads: dict[str, Any] = {}
    trace: dict[str, list[Provenance]] = {}
    for qi, ranking in enumerate(rankings):
        if isinstance(ranking, (str, bytes)) or not isinstance(ranking, Sequence):
            raise ValueError(f"rankings[{qi}] must be a sequence of retrieved items")
        seen_here: set[str] = set()
        for pos, item in enumerate(ranking):
            doc_id, score, text, payload = _as_item(item, f"rankings[{qi}][{pos}]")
            if doc_id in seen_here:  # a repeat inside one ranking counts once, at its best rank
                continue
            seen_here.add(doc_id)
            r = len(seen_here)
            if doc_id not in trace:
                order.append(doc_id)
                texts[doc_id] = text
                payloads[doc_id] = payload
                trace[doc_id] = []
            trace[doc_id].append(Provenance(qi, queries[qi] if queries is not None else "", r, score))
    fused: dict[str, float] = {}
    for pos, doc_id in enumerate(order):
        provs = trace[doc_id]
        if method == "rrf":
            fused[doc_id] = sum(1.0 / (rrf_k + p.rank) for p in provs)
        elif method == "max":
            finite = [p.score for p in provs if p.score == p.score]
            fused[doc_id] = max(finite) if finite else float("-inf")
        else:
            fused[doc_id] = -float(pos)
    position = {d: i for i, d in enumerate(order)}
    ranked = sorted(order, key=lambda d: (-fused[d], position[d]))
    return [PooledDocument(d, texts[d], fused[d], tuple(trace[d]), None, payloads[d]) for d in ranked]


def _cut(pool: Sequence[PooledDocument], pool_size: int | None) -> list[PooledDocument]:
    pool_size = validate_top_k(pool_size)
    return list(pool[:pool_size] if pool_size is not None else pool)


def rerank_pool(
    question: str,
    pool: Sequence[PooledDocument],
    reranker: Reranker,
    *,
    top_k: int | None = None,
    pool_size: int | None = None,
) -> list[PooledDocument]:
    """Rerank the (first ``pool_size`` of the) pool against the original ``question``.

    Example:
        >>> from rerank_plugins.testing import KeywordReranker
        >>> pool = fuse([[("a", 1.0, "red fox"), ("b", 0.5, "blue whale")]])
        >>> [(d.id, d.rerank_score) for d in rerank_pool("blue whale", pool, KeywordReranker())]
        [('b', 2.0), ('a', 0.0)]
    """
    docs = _cut(pool, pool_size)
    hits = reranker.rerank(question, [d.text for d in docs], top_k)
    return [replace(docs[h.index], rerank_score=float(h.score)) for h in hits]


async def arerank_pool(
    question: str,
    pool: Sequence[PooledDocument],
    reranker: Reranker,
    *,
    top_k: int | None = None,
    pool_size: int | None = None,
) -> list[PooledDocument]:
    """Async :func:`rerank_pool` (``reranker.arerank``)."""
    docs = _cut(pool, pool_size)
    hits = await reranker.arerank(question, [d.text for d in docs], top_k)
    return [replace(docs[h.index], rerank_score=float(h.score)) for h in hits]


# --------------------------------------------------------------------------- retrieval


@runtime_checkable
class BatchRetriever(Protocol):
    """A retriever answering several queries at once: ``search(queries, k)`` -> one ranking per query.

    Items are ``(id, score, text)`` tuples or objects with ``id``, ``score`` and ``text``.
    """

    def search(self, queries: list[str], k: int) -> Sequence[Sequence[Any]]: ...


class _SearchBatchAdapter:
    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def search(self, queries: list[str], k: int) -> Sequence[Sequence[Any]]:
        result: Sequence[Sequence[Any]] = self.obj.search_batch(queries, k=k)
        return result


class _FunctionAdapter:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def search(self, queries: list[str], k: int) -> Sequence[Sequence[Any]]:
        result: Sequence[Sequence[Any]] = self.fn(queries, k)
        return result


def as_batch_retriever(retriever: Any) -> BatchRetriever:
    """Adapt ``retriever`` to :class:`BatchRetriever`.

    Accepted: an object with ``search_batch(queries, k=...)`` (e.g.
    :class:`~rerank_plugins.retrieval.FaissIndex`), an object with ``search(queries, k)``
    (the protocol itself), or a function ``(queries, k) -> rankings``.
    """
    if hasattr(retriever, "search_batch"):
        return _SearchBatchAdapter(retriever)
    if callable(getattr(retriever, "search", None)):
        return retriever
    if callable(retriever):
        return _FunctionAdapter(retriever)
    raise ValueError(
        "retriever must have search_batch(queries, k), search(queries, k), or be a function (queries, k) -> rankings"
    )


@dataclass(frozen=True, slots=True)
class DecompositionResult:
    """What :meth:`DecompositionRetriever.retrieve` found, and how.

    Attributes:
        question: the original question.
        decomposition: the sub-questions (or the fallback).
        queries: the queries actually retrieved with (original first unless excluded).
        documents: the final documents, best first (reranked when a reranker is set).
        pool: the whole fused pool before reranking.
        timings: seconds spent in ``decompose``, ``retrieve``, ``fuse`` and ``rerank``.
    """

    question: str
    decomposition: Decomposition
    queries: tuple[str, ...]
    documents: tuple[PooledDocument, ...]
    pool: tuple[PooledDocument, ...]
    timings: dict[str, float]


class DecompositionRetriever:
    """Decompose, retrieve for every query, fuse, rerank against the original question.

    Args:
        retriever: anything :func:`as_batch_retriever` accepts (a FaissIndex works as is).
        decomposer: a :class:`Decomposer`; ``None`` retrieves with the question alone.
        reranker: any :class:`~rerank_plugins.types.Reranker` (e.g. ``registry.create("pointwise",
            model=...)``); ``None`` returns the fused order.
        k: documents retrieved per query.
        fusion: ``"rrf"`` (default), ``"max"`` or ``"none"`` (see :func:`fuse`).
        rrf_k: the RRF constant.
        pool_size: rerank only the first ``pool_size`` fused documents (``None``: the whole pool).
        top_k: documents returned (``None``: all reranked / pooled).
        include_original: retrieve with the original question besides the sub-questions.

    Example:
        >>> from rerank_plugins.retrieval import FaissIndex, HashingEmbedder
        >>> index = FaissIndex.build(["NVIDIA profit", "Apple profit", "pears"], embedder=HashingEmbedder(64))
        >>> llm = lambda prompt: "1. NVIDIA profit\\n2. Apple profit"
        >>> pipe = DecompositionRetriever(index, decomposer=Decomposer(llm), k=1)
        >>> [d.text for d in pipe.retrieve("Who earned more, NVIDIA or Apple?").documents]
        ['NVIDIA profit', 'Apple profit']
    """

    def __init__(
        self,
        retriever: Any,
        *,
        decomposer: Decomposer | None = None,
        reranker: Reranker | None = None,
        k: int = 10,
        fusion: FusionMethod = "rrf",
        rrf_k: int = 60,
        pool_size: int | None = None,
        top_k: int | None = None,
        include_original: bool = True,
    ) -> None:
        if fusion not in _FUSION_METHODS:
            raise ValueError(f"fusion must be one of {', '.join(_FUSION_METHODS)}; got {fusion!r}")
        if isinstance(rrf_k, bool) or not isinstance(rrf_k, (int, float)) or rrf_k < 0:
            raise ValueError(f"rrf_k must be a non-negative number, got {rrf_k!r}")
        if decomposer is not None and not isinstance(decomposer, Decomposer):
            raise ValueError(f"decomposer must be a Decomposer or None, got {type(decomposer).__name__}")
        if reranker is not None and not isinstance(reranker, Reranker):
            raise ValueError("reranker must implement rerank(query, documents, top_k) and arerank (a Reranker)")
        self.retriever = as_batch_retriever(retriever)
        self.decomposer = decomposer
        self.reranker = reranker
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        for name, value in (("pool_size", pool_size), ("top_k", top_k)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        self.k = k
        self.fusion: FusionMethod = fusion
        self.rrf_k = rrf_k
        self.pool_size = pool_size
        self.top_k = top_k
        if not isinstance(include_original, bool):
            raise ValueError(f"include_original must be a bool (True or False), got {include_original!r}")
        self.include_original = include_original

    def _fuse(
        self, queries: list[str], rankings: Sequence[Sequence[Any]], timings: dict[str, float]
    ) -> list[PooledDocument]:
        t0 = time.perf_counter()
        if len(rankings) != len(queries):
            raise ValueError(f"the retriever returned {len(rankings)} rankings for {len(queries)} queries")
        pool = fuse(rankings, queries=queries, method=self.fusion, rrf_k=self.rrf_k)
        timings["fuse"] = time.perf_counter() - t0
        return pool

    def retrieve(self, question: str) -> DecompositionResult:
        """Run the pipeline for ``question``."""
        question = validate_query(question)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        dec = self.decomposer.decompose(question) if self.decomposer else Decomposition.trivial(question)
        timings["decompose"] = time.perf_counter() - t0
        queries = query_list(dec, include_original=self.include_original)
        t0 = time.perf_counter()
        rankings = self.retriever.search(queries, self.k)
        timings["retrieve"] = time.perf_counter() - t0
        pool = self._fuse(queries, rankings, timings)
        t0 = time.perf_counter()
        if self.reranker is not None and pool:
            docs = rerank_pool(question, pool, self.reranker, top_k=self.top_k, pool_size=self.pool_size)
        else:
            docs = _cut(pool, self.top_k)
        timings["rerank"] = time.perf_counter() - t0
        return DecompositionResult(question, dec, tuple(queries), tuple(docs), tuple(pool), timings)

    async def aretrieve(self, question: str) -> DecompositionResult:
        """Async :meth:`retrieve`: the LLM call and the rerank do not block the event loop."""
        question = validate_query(question)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        dec = await self.decomposer.adecompose(question) if self.decomposer else Decomposition.trivial(question)
        timings["decompose"] = time.perf_counter() - t0
        queries = query_list(dec, include_original=self.include_original)
        t0 = time.perf_counter()
        rankings = await asyncio.to_thread(self.retriever.search, queries, self.k)
        timings["retrieve"] = time.perf_counter() - t0
        pool = self._fuse(queries, rankings, timings)
        t0 = time.perf_counter()
        if self.reranker is not None and pool:
            docs = await arerank_pool(question, pool, self.reranker, top_k=self.top_k, pool_size=self.pool_size)
        else:
            docs = _cut(pool, self.top_k)
        timings["rerank"] = time.perf_counter() - t0
        return DecompositionResult(question, dec, tuple(queries), tuple(docs), tuple(pool), timings)

    def __repr__(self) -> str:
        return (
            f"DecompositionRetriever(k={self.k}, fusion={self.fusion!r}, decomposer={self.decomposer!r}, "
            f"reranker={self.reranker!r})"
        )
