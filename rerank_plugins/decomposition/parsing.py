"""Sub-questions out of whatever a model answered: lists, bullets, JSON, code fences, chatter.

:func:`parse_subquestions` never raises; anything unusable gives ``[]``, and the
:class:`~rerank_plugins.decomposition.Decomposer` then falls back to the original question.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from rerank_plugins.text import clean_text

__all__ = ["MAX_ITEM_CHARS", "normalize_question", "parse_subquestions"]

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
