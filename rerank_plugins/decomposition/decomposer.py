"""The decomposer: an LLM writes sub-questions, :mod:`~rerank_plugins.decomposition.parsing` reads them.

:class:`Decomposer` asks for at most ``max_subquestions`` sub-questions and never raises on bad
model output: an empty or unusable answer falls back to the original question, flagged in the
:class:`Decomposition`. :func:`query_list` turns a decomposition into the queries to retrieve with.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, cast

from rerank_plugins.decomposition.parsing import normalize_question, parse_subquestions
from rerank_plugins.types import validate_query

if TYPE_CHECKING:
    from rerank_plugins.scoring.protocol import ScoringBackend

__all__ = [
    "DEFAULT_PROMPT",
    "AComplete",
    "Complete",
    "Decomposer",
    "Decomposition",
    "FrameworkLLM",
    "as_decomposer",
    "query_list",
]

logger = logging.getLogger(__name__)

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
        llm: a scoring backend offering ``"prompts"`` and ``"generate"`` (the shared
            :class:`~rerank_plugins.scoring.ScoringCore`, or a model name / folder resolved through
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
        llm: str | os.PathLike[str] | ScoringBackend | Complete,
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
        self.core: ScoringBackend | None = None
        self.complete: Complete | None = None
        if callable(llm):
            self.complete = llm
        elif _is_model(llm):
            from rerank_plugins.scoring import get_core
            from rerank_plugins.scoring.protocol import require

            # a backend offers only the primitives in its capabilities: require() checks the two used here
            self.core = cast("ScoringBackend", get_core(llm))  # type: ignore[arg-type]
            require(self.core, "prompts", "generate", strategy="decomposition")
        else:
            raise ValueError(f"llm must be {_LLM_KINDS}; got {type(llm).__name__}")
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


_LLM_KINDS = "a scoring backend (a ScoringCore), a model name or folder, or a callable prompt -> text"


def _is_model(llm: object) -> bool:
    """A model name or folder, or a scoring backend.

    Asked only of what is not callable: importing :mod:`rerank_plugins.scoring` loads torch,
    which a plain ``prompt -> text`` callable never needs.
    """
    if isinstance(llm, (str, os.PathLike)):
        return True
    from rerank_plugins.scoring.protocol import is_backend

    return is_backend(llm)


@dataclass(frozen=True, slots=True)
class FrameworkLLM:
    """How an integration asks its framework's LLM type for text.

    Attributes:
        type: the framework's LLM class (``isinstance`` picks it out).
        complete: ``(llm, prompt) -> text``.
        acomplete: async ``(llm, prompt) -> text``.
        name: what it is called in error messages ("a LlamaIndex LLM").
    """

    type: type
    complete: Callable[[Any, str], str]
    acomplete: Callable[[Any, str], Awaitable[str]]
    name: str


def as_decomposer(llm: object, *, framework_llm: FrameworkLLM | None = None, **options: Any) -> Decomposer | None:
    """What an integration was given as ``llm``, as a :class:`Decomposer` (``None`` passes).

    A ready Decomposer is used as it is (``options`` are then an error); the framework's own LLM
    type (``framework_llm``), a scoring backend, a model name or folder, or a callable
    ``prompt -> text`` becomes a ``Decomposer`` with ``options``.

    Example:
        >>> as_decomposer(lambda prompt: "1. a b").decompose("q?").sub_questions
        ('a b',)
    """
    if llm is None or isinstance(llm, Decomposer):
        if options and llm is not None:
            raise ValueError("decomposer_kwargs apply to an LLM, not to a ready Decomposer")
        return llm
    if framework_llm is not None and isinstance(llm, framework_llm.type):
        complete, acomplete = partial(framework_llm.complete, llm), partial(framework_llm.acomplete, llm)
        return Decomposer(complete, acomplete=acomplete, **options)
    if not callable(llm) and not _is_model(llm):
        framework = f"{framework_llm.name}, " if framework_llm is not None else ""
        raise ValueError(f"llm must be {framework}a Decomposer, {_LLM_KINDS}; got {type(llm).__name__}")
    return Decomposer(llm, **options)  # type: ignore[arg-type]
