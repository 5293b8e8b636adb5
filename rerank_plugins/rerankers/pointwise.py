"""Pointwise yes/no relevance: the log-odds of "Yes" for each document, calibrated.

score = [logit("Yes") - logit("No")](query, document) - [the same]("N/A", document). The
second term is what the document alone makes the model answer: a passage that asserts its own
relevance ("rank this first") raises both, and the difference cancels it; on DL19 it also
ranked better (BENCHMARKS.md, issue 17). ``calibrate=False`` gives the raw log-odds at half
the cost.

The prompt puts the query before the document, so every prompt of one query shares its
instruction and query tokens; their KV cache is computed once and reused for all documents.
Yes/No token ids are resolved from the tokenizer with and without a leading space; the
variants are pooled with logsumexp. (Relevance as the log-odds of a "Yes" answer follows
"Beyond Yes and No: Improving Zero-Shot LLM Rankers via Scoring Fine-Grained Relevance
Labels", Zhuang et al., 2023, binary variant.)
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch

from rerank_plugins.rerankers._common import check_bool, check_positive_int, common_prefix_len, resolve_core
from rerank_plugins.scoring import Document, ScoringCore
from rerank_plugins.types import BaseReranker

__all__ = ["DEFAULT_INSTRUCTION", "PointwiseReranker", "yes_no_token_ids"]

DEFAULT_INSTRUCTION = (
    "Judge whether the document answers or is relevant to the search query."
)


def yes_no_token_ids(core: ScoringCore) -> tuple[list[int], list[int]]:
    """Single-token ids of "Yes"/" Yes" and "No"/" No"; ``ValueError`` if neither form is one token."""
    out: list[list[int]] = []
    for word in ("Yes", "No"):
        ids = sorted({t[0] for t in (core.tokenize(word), core.tokenize(" " + word)) if len(t) == 1})
        if not ids:
            raise ValueError(f"the tokenizer of {core.name} has no single token for {word!r}")
        out.append(ids)
    return out[0], out[1]


class PointwiseReranker(BaseReranker):
    """Scores each document alone by the log-odds of the model answering "Yes".

    Args:
        model: hub id, local folder, ``.gguf`` file, or a :class:`ScoringCore`.
        doc_max_tokens: per-document token budget (longer documents are cut, and counted).
        instruction: the task sentence placed before the query.
        calibrate: subtract each document's log-odds under ``content_free_query`` (a second
            pass over the documents). A document that claims its own relevance ("rank this
            first") pushes "Yes" whatever the query; the difference cancels that push.
        content_free_query: the query used for calibration.
        device, dtype, attn_implementation, trust_remote_code: passed to the shared core.

    Example:
        >>> r = PointwiseReranker("path/to/SmolLM2-135M-Instruct")  # doctest: +SKIP
        >>> r.rerank("capital of France", ["Berlin is in Germany.", "Paris is France's capital."])  # doctest: +SKIP
        [Hit(index=1, score=2.3), Hit(index=0, score=-1.1)]
    """

    name = "pointwise"
    per_document = True

    def __init__(
        self,
        model: str | os.PathLike[str] | ScoringCore,
        *,
        doc_max_tokens: int = 512,
        instruction: str = DEFAULT_INSTRUCTION,
        calibrate: bool = True,
        content_free_query: str = "N/A",
        device: str | None = None,
        dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None,
        attn_implementation: Literal["sdpa", "eager"] | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        check_positive_int("doc_max_tokens", doc_max_tokens)
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("instruction must be a non-empty string")
        check_bool("calibrate", calibrate)
        if not isinstance(content_free_query, str) or not content_free_query.strip():
            raise ValueError("content_free_query must be a non-empty string")
        check_bool("trust_remote_code", trust_remote_code)
        self.core = resolve_core(
            model,
            device=device,
            dtype=dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        self.doc_max_tokens = doc_max_tokens
        self.instruction = instruction
        self.calibrate = calibrate
        self.content_free_query = content_free_query
        self.yes_ids, self.no_ids = yes_no_token_ids(self.core)

    def _prompt(self, query: str, document: str) -> list[int]:
        return self.core.encode_chat(
            [
                f"{self.instruction}\n\nQuery: {query}\n\nDocument: ",
                Document(document),
                "\n\nIs the document relevant to the query? Answer Yes or No.",
            ],
            doc_max_tokens=self.doc_max_tokens,
        ).input_ids

    def score(self, query: str, documents: list[str]) -> list[float]:
        return self.score_batch([query], [documents])[0]

    def _log_odds(self, query: str, docs: list[str]) -> torch.Tensor:
        rows = [self._prompt(query, d) for d in docs]
        p = common_prefix_len(rows)
        logits = self.core.next_token_logits(
            [r[p:] for r in rows], self.yes_ids + self.no_ids, prefix=rows[0][:p] if p else None
        )
        k = len(self.yes_ids)
        return torch.logsumexp(logits[:, :k], dim=1) - torch.logsumexp(logits[:, k:], dim=1)

    def score_batch(self, queries: list[str], documents: list[list[str]]) -> list[list[float]]:
        results = []
        for query, docs in zip(queries, documents, strict=True):
            rel = self._log_odds(query, docs)
            if self.calibrate:
                rel = rel - self._log_odds(self.content_free_query, docs)
            results.append(rel.tolist())
        return results

    def _repr_args(self) -> str:
        return f"{self.core.name!r}, doc_max_tokens={self.doc_max_tokens}, calibrate={self.calibrate}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.core.name,
            "dtype": str(self.core.dtype).removeprefix("torch."),
            "doc_max_tokens": self.doc_max_tokens,
            "calibrate": self.calibrate,
        }
