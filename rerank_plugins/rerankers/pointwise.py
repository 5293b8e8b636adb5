"""Pointwise yes/no relevance: the log-odds of "Yes" for each document, calibrated.

score = [logit("Yes") - logit("No")](query, document) - [the same]("N/A", document). The
second term is what the document alone makes the model answer: a passage that asserts its own
relevance ("rank this first") raises both, and the difference cancels it; on DL19 it also
ranked better (BENCHMARKS.md, "prompt injection"). ``calibrate=False`` gives the raw log-odds at half
the cost.

The prompt puts the query before the document, so every prompt of one query shares its
instruction and query tokens; their KV cache is computed once and reused for all documents.
Yes/No token ids are resolved from the tokenizer with and without a leading space; the
variants are pooled with logsumexp. (Relevance as the log-odds of a "Yes" answer follows
"Beyond Yes and No: Improving Zero-Shot LLM Rankers via Scoring Fine-Grained Relevance
Labels", Zhuang et al., 2023, binary variant.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field, StrictBool, StrictStr, field_validator

from rerank_plugins.options import LLMOptions, PositiveInt
from rerank_plugins.rerankers.base import ModelReranker, common_prefix_len
from rerank_plugins.scoring import Document
from rerank_plugins.types import Call

__all__ = ["DEFAULT_INSTRUCTION", "PointwiseOptions", "PointwiseReranker", "yes_no_token_ids"]

DEFAULT_INSTRUCTION = (
    "Judge whether the document answers or is relevant to the search query."
)


def _sigmoid(x: float) -> float:
    if math.isnan(x):
        return 0.0
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def yes_no_token_ids(core: Any) -> tuple[list[int], list[int]]:
    """Single-token ids of "Yes"/" Yes" and "No"/" No"; ``ValueError`` if neither form is one token."""
    out: list[list[int]] = []
    for word in ("Yes", "No"):
        ids = sorted({t[0] for t in (core.tokenize(word), core.tokenize(" " + word)) if len(t) == 1})
        if not ids:
            raise ValueError(f"the tokenizer of {core.name} has no single token for {word!r}")
        out.append(ids)
    return out[0], out[1]


class PointwiseOptions(LLMOptions):
    """Options of :class:`PointwiseReranker`."""

    doc_max_tokens: PositiveInt = Field(
        default=512, description="Per-document token budget; longer documents are cut and counted."
    )
    instruction: StrictStr = Field(
        default=DEFAULT_INSTRUCTION, description="The task sentence placed before the query."
    )
    calibrate: StrictBool = Field(
        default=True,
        description="Subtract each document's log-odds under content_free_query (a second pass): a document "
        'that claims its own relevance ("rank this first") pushes "Yes" whatever the query; the difference '
        "cancels that push.",
    )
    content_free_query: StrictStr = Field(default="N/A", description="The query used for calibration.")

    @field_validator("instruction", "content_free_query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty string")
        return value


class PointwiseReranker(ModelReranker):
    """Scores each document alone by the log-odds of the model answering "Yes".

    Args:
        model: hub id, local folder, ``.gguf`` file, or a scoring backend.
        **options: see :class:`PointwiseOptions` (``doc_max_tokens``, ``instruction``,
            ``calibrate``, ``content_free_query``, and how the model is loaded).

    Example:
        >>> r = PointwiseReranker("path/to/SmolLM2-135M-Instruct")  # doctest: +SKIP
        >>> r.rerank("capital of France", ["Berlin is in Germany.", "Paris is France's capital."])  # doctest: +SKIP
        [Hit(index=1, score=2.3), Hit(index=0, score=-1.1)]
    """

    name = "pointwise"
    per_document = True
    options_class = PointwiseOptions
    options: PointwiseOptions
    repr_settings = ("doc_max_tokens", "calibrate")

    def _prepare(self) -> None:
        self.yes_ids, self.no_ids = yes_no_token_ids(self.core)

    def _prompt(self, query: str, document: str) -> list[int]:
        return self.core.encode_chat(
            [
                f"{self.options.instruction}\n\nQuery: {query}\n\nDocument: ",
                Document(document),
                "\n\nIs the document relevant to the query? Answer Yes or No.",
            ],
            doc_max_tokens=self.options.doc_max_tokens,
        ).input_ids

    def _log_odds(self, query: str, docs: list[str], call: Call) -> torch.Tensor:
        rows = [self._prompt(query, d) for d in docs]
        p = common_prefix_len(rows)
        logits = self.core.next_token_logits(
            [r[p:] for r in rows], self.yes_ids + self.no_ids, prefix=rows[0][:p] if p else None
        )
        call.count("rows", len(rows))
        k = len(self.yes_ids)
        return torch.logsumexp(logits[:, :k], dim=1) - torch.logsumexp(logits[:, k:], dim=1)

    def relevance(self, scores: Sequence[float]) -> list[float]:
        """``sigmoid(score)``: the probability of "Yes" under the (calibrated) log-odds.

        With calibration, 0.5 means the document makes the model answer "Yes" exactly as often
        as the content-free query does; above 0.5, more often. A document's relevance depends
        on it and the query alone, so values from separate calls (same model and options) are
        comparable and a threshold means the same for every query.

        Example:
            >>> PointwiseReranker.relevance(None, [0.0, 2.0])  # doctest: +ELLIPSIS
            [0.5, 0.880...]
        """
        return [_sigmoid(float(s)) for s in scores]

    def _score_one(self, query: str, documents: list[str], call: Call) -> list[float]:
        rel = self._log_odds(query, documents, call)
        if self.options.calibrate:
            rel = rel - self._log_odds(self.options.content_free_query, documents, call)
        return rel.tolist()
