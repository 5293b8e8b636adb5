"""Prompts as token ids: plain-text user content inside the model's chat template.

:class:`ChatPrompts` is the prompt half of a backend. It needs only the model's tokenizer, so the
in-process core and a served model build the very same token ids: query and document text is
always plain text (never a special or chat-template control token), documents are cut to a
token budget (never the instruction or the assistant prefix), and every cut is counted.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rerank_plugins.scoring.stats import CoreStats
from rerank_plugins.text import clean_text

__all__ = ["ChatPrompts", "Document", "EncodedPrompt"]

logger = logging.getLogger(__name__)

_SENTINEL = "\u2063RERANKPLUGINSUSER\u2063"


@dataclass(frozen=True, slots=True)
class Document:
    """A prompt part that may be truncated to the document token budget."""

    text: str


@dataclass(slots=True)
class EncodedPrompt:
    """Token ids of a prompt and where each :class:`Document` part landed in them."""

    input_ids: list[int]
    spans: list[tuple[int, int]]
    truncated: int = 0


class ChatPrompts:
    """Tokenization and chat prompts over one Hugging Face tokenizer.

    Args:
        tokenizer: the model's tokenizer (with its chat template, if it has one).
        stats: where truncated documents are counted.

    Example:
        >>> prompts = ChatPrompts(tokenizer, CoreStats())  # doctest: +SKIP
        >>> prompts.encode_chat(["Query: x\\n", Document("long text")], doc_max_tokens=64).spans  # doctest: +SKIP
        [(12, 14)]
    """

    def __init__(self, tokenizer: Any, stats: CoreStats | None = None) -> None:
        self.tokenizer = tokenizer
        self.stats = stats if stats is not None else CoreStats()
        self._template_cache: dict[str | None, tuple[str, str]] = {}
        # User text goes through its own tokenizer copy that always splits special-token strings:
        # fast tokenizers apply a per-call `split_special_tokens` by flipping shared state, which
        # races between threads encoding prompts and templates at the same time.
        self._plain_tokenizer = copy.deepcopy(tokenizer)
        self._plain_tokenizer.split_special_tokens = True
        # Tokens the chat template uses but that are not flagged special (Qwen's <tool_call>)
        # still match whole in plain text; whitespace and other added tokens are ordinary text.
        template = str(getattr(tokenizer, "chat_template", None) or "")
        control = {
            int(i): t.content
            for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
            if not t.special and t.content.strip() and t.content in template
        }
        self._control_ids = frozenset(control)
        contents = sorted(set(control.values()), key=len, reverse=True)
        self._control_pattern = re.compile("|".join(map(re.escape, contents)) or "(?!)")

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as plain text.

        No special tokens are added, and the strings of special tokens and of the chat template's
        own tokens inside ``text`` (``<|im_end|>``, ``</s>``, Qwen's ``<tool_call>``) are encoded
        as ordinary characters, so a query or document cannot close a chat turn or impersonate
        the assistant. Lone surrogates become U+FFFD. Safe to call from several threads.
        """
        text = clean_text(text)
        ids = self._encode_plain(text)
        if self._control_ids.isdisjoint(ids):
            return ids
        # Cut every occurrence of a template token after its first character, so it is spelled
        # with ordinary tokens.
        out: list[int] = []
        start = 0
        for match in self._control_pattern.finditer(text):
            out += self._encode_plain(text[start : match.start() + 1])
            start = match.start() + 1
        return out + self._encode_plain(text[start:])

    def _encode_plain(self, text: str) -> list[int]:
        ids: list[int] = self._plain_tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def _tokenize_template(self, text: str) -> list[int]:
        # The chat template's own text is the one place where control tokens are parsed as such.
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def token_ids(self, words: Sequence[str]) -> list[int]:
        """The single token id of each word; ``ValueError`` if a word is not one token."""
        out = []
        for w in words:
            ids = self.tokenize(w)
            if len(ids) != 1:
                raise ValueError(f"{w!r} is {len(ids)} tokens for this tokenizer, expected one")
            out.append(ids[0])
        return out

    def _template_halves(self, system: str | None) -> tuple[str, str]:
        if system not in self._template_cache:
            tok = self.tokenizer
            if getattr(tok, "chat_template", None):
                messages = [{"role": "user", "content": _SENTINEL}]
                if system is not None:
                    messages.insert(0, {"role": "system", "content": system})
                text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                head, _, tail = text.partition(_SENTINEL)
                if not _:
                    raise RuntimeError("the chat template dropped the user message")
            else:
                # No chat template (base models): plain text with a simple answer cue.
                head = (system + "\n\n") if system else ""
                tail = "\n"
            self._template_cache[system] = (head, tail)
        return self._template_cache[system]

    def encode_chat(
        self,
        parts: Sequence[str | Document | Sequence[int]],
        *,
        system: str | None = None,
        assistant_prefix: str | Sequence[int] = "",
        doc_max_tokens: int | None = None,
    ) -> EncodedPrompt:
        """Build a chat prompt: the user turn holds ``parts``, then the assistant turn opens.

        Fixed text (``str``) and raw ids are kept whole; each :class:`Document` is cut to
        ``doc_max_tokens`` (counted in ``stats.truncated_documents`` and logged). Parts are
        tokenized separately so every document's token span is known exactly.

        Example:
            >>> enc = core.encode_chat(["Query: x\\n", Document("long text")], doc_max_tokens=64)  # doctest: +SKIP
            >>> enc.spans  # doctest: +SKIP
            [(12, 14)]
        """
        if doc_max_tokens is not None and doc_max_tokens < 1:
            raise ValueError(f"doc_max_tokens must be a positive int or None, got {doc_max_tokens}")
        head, tail = self._template_halves(system)
        ids = self._tokenize_template(head)
        spans: list[tuple[int, int]] = []
        truncated = 0
        for part in parts:
            if isinstance(part, Document):
                t = self.tokenize(part.text)
                if doc_max_tokens is not None and len(t) > doc_max_tokens:
                    t = t[:doc_max_tokens]
                    truncated += 1
                spans.append((len(ids), len(ids) + len(t)))
                ids.extend(t)
            elif isinstance(part, str):
                ids.extend(self.tokenize(part))
            else:
                ids.extend(int(i) for i in part)
        ids.extend(self._tokenize_template(tail))
        if isinstance(assistant_prefix, str):
            if assistant_prefix:
                ids.extend(self.tokenize(assistant_prefix))
        else:
            ids.extend(int(i) for i in assistant_prefix)
        if truncated:
            self.stats.add(truncated_documents=truncated)
            logger.info("truncated %d document(s) to %d tokens", truncated, doc_max_tokens)
        return EncodedPrompt(ids, spans, truncated)

    def encode_documents(self, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
        """Each text as plain-text token ids, cut to ``max_tokens`` (cuts counted and logged).

        Example:
            >>> prompts.encode_documents(["a long passage ..."], max_tokens=64)  # doctest: +SKIP
            [[64, 1535, 3236]]
        """
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
        out: list[list[int]] = []
        truncated = 0
        for text in texts:
            ids = self.tokenize(text)
            if len(ids) > max_tokens:
                ids, truncated = ids[:max_tokens], truncated + 1
            out.append(ids)
        if truncated:
            self.stats.add(truncated_documents=truncated)
            logger.info("truncated %d document(s) to %d tokens", truncated, max_tokens)
        return out
