"""In-context reranking (ICR): relevance from the attention the query pays to each document.

Ported from "Attention in Large Language Models Yields Efficient Zero-Shot Re-Rankers"
(Chen, Gutiérrez and Su, 2024). The documents come first and the query last in one chat
prompt; no token is generated. Each document's score is the attention mass that the query
tokens put on its tokens, summed over a range of layers and all heads:

1. The instruction and documents (the prefix) run once; the real query and a content-free
   query ("N/A") then each run on that prefix's KV cache, so calibration costs only the
   query tokens (:func:`~rerank_plugins.scoring.attention.suffix_attention`).
2. Per document token: the attention averaged over the real query's tokens minus the same
   average for the content-free query (averages, so queries of different lengths compare).
3. Calibrated token scores below ``mean - outlier_std * std`` (over all document tokens) are
   dropped, as in the paper; a document's score is the sum over its remaining tokens.

Lists that do not fit the context are scored in sliding windows (from the bottom of the list
up, the best documents of each window carried into the next, as in RankGPT).

Example:
    >>> from rerank_plugins.rerankers.attention import AttentionReranker
    >>> r = AttentionReranker("path/to/Qwen2.5-0.5B-Instruct")  # doctest: +SKIP
    >>> r.rerank("capital of France", ["Berlin is in Germany.", "Paris is France's capital."])  # doctest: +SKIP
    [Hit(index=1, score=0.41), Hit(index=0, score=-0.12)]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Literal

import torch

from rerank_plugins.rerankers._common import check_bool, check_positive_int, resolve_core
from rerank_plugins.scoring import Document, ScoringCore
from rerank_plugins.scoring.attention import check_supported, resolve_layers, span_sums, suffix_attention
from rerank_plugins.types import BaseReranker

__all__ = [
    "PROMPTS",
    "AttentionReranker",
    "calibrated_token_scores",
    "document_scores",
    "outlier_keep_mask",
    "parse_layers",
    "window_schedule",
]

logger = logging.getLogger(__name__)

#: (text before the documents, text between the documents and the query); adapted from ICR.
PROMPTS: dict[str, tuple[str, str]] = {
    "retrieval": (
        "Here are some paragraphs:\n\n",
        "Please find information that is relevant to the following query in the paragraphs above.\n\nQuery: ",
    ),
    "qa": (
        "Here are some paragraphs:\n\n",
        "Please answer the following question based on the paragraphs above.\n\nQuestion: ",
    ),
}

_DOC_SEP = "\n\n"


# ---------------------------------------------------------------------------- pure scoring math


def calibrated_token_scores(query_rows: torch.Tensor, content_free_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Per-position attention averaged over query tokens, minus the content-free query's average.

    Args:
        query_rows: ``[query_len, n]`` attention of each query token onto ``n`` positions.
        content_free_rows: ``[cf_len, n]`` the same for the content-free query, or ``None``
            (uncalibrated: the plain average).

    Example:
        >>> calibrated_token_scores(torch.tensor([[0.5, 0.1], [0.3, 0.3]]), torch.tensor([[0.2, 0.2]]))
        tensor([0.2000, 0.0000])
    """
    if query_rows.dim() != 2 or query_rows.shape[0] == 0:
        raise ValueError("query_rows must be a non-empty [query_len, n] tensor")
    scores = query_rows.float().mean(0)
    if content_free_rows is not None:
        if content_free_rows.dim() != 2 or content_free_rows.shape[0] == 0:
            raise ValueError("content_free_rows must be a non-empty [cf_len, n] tensor")
        if content_free_rows.shape[1] != query_rows.shape[1]:
            raise ValueError("query_rows and content_free_rows must cover the same positions")
        scores = scores - content_free_rows.float().mean(0)
    return scores


def outlier_keep_mask(
    token_scores: torch.Tensor, spans: Sequence[tuple[int, int]], n_std: float | None = 2.0
) -> torch.Tensor:
    """Which document tokens to keep: those scoring at least ``mean - n_std * std``.

    Mean and (population) standard deviation are taken over every token inside ``spans``;
    positions outside the spans are never kept. ``n_std=None`` keeps every document token.

    Example:
        >>> outlier_keep_mask(torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, -9.0, 7.0]), [(0, 6)], 2.0).tolist()
        [True, True, True, True, True, False, False]
    """
    keep = torch.zeros(token_scores.shape[-1], dtype=torch.bool)
    for s, e in spans:
        keep[s:e] = True
    if n_std is None or not bool(keep.any()):
        return keep
    values = token_scores[keep].double()
    threshold = values.mean() - n_std * values.std(unbiased=False)
    return keep & (token_scores.double() >= threshold)


def document_scores(
    token_scores: torch.Tensor, spans: Sequence[tuple[int, int]], keep: torch.Tensor | None = None
) -> list[float]:
    """Sum of (kept) token scores inside each span.

    Example:
        >>> document_scores(torch.tensor([1.0, 2.0, 3.0, 4.0]), [(0, 2), (2, 4)], torch.tensor([1, 1, 0, 1]).bool())
        [3.0, 4.0]
    """
    scores = token_scores if keep is None else token_scores * keep.to(token_scores.dtype)
    return [float(x) for x in span_sums(scores[None].float(), spans)[0]]


def window_schedule(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Sliding windows ``(start, end)`` over ranks ``0..n``, from the bottom of the list up.

    Example:
        >>> window_schedule(7, 4, 2)
        [(3, 7), (1, 5), (0, 4)]
    """
    if size < 1 or not 1 <= stride <= size:
        raise ValueError(f"need size >= 1 and 1 <= stride <= size, got size={size}, stride={stride}")
    if n <= size:
        return [(0, n)]
    out = []
    end = n
    while True:
        start = max(0, end - size)
        if start == 0:  # the top window is always a full one
            out.append((0, size))
            return out
        out.append((start, end))
        end -= stride


def parse_layers(layers: str | Sequence[int] | None) -> str | list[int] | None:
    """Validate a layer choice: ``None`` (all), a slice string like ``"8:16"`` / ``"-6:"``, or ints.

    Ints come as a sequence (list, tuple, range); anything else (a bare int, bytes, a set) is a
    ``ValueError`` naming ``layers``.

    Example:
        >>> parse_layers("4:8"), parse_layers([1, 2])
        ('4:8', [1, 2])
    """
    if layers is None:
        return None
    if isinstance(layers, str):
        parts = layers.split(":")
        if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() or not p.strip() for p in parts):
            raise ValueError(f"layers must be a slice like '8:16', ':12' or '-6:', got {layers!r}")
        return layers
    if isinstance(layers, (bytes, bytearray)) or not isinstance(layers, Sequence):
        raise ValueError(
            f"layers must be None, a slice string like '8:16', or a list of ints; got {type(layers).__name__} "
            f"{layers!r}"
        )
    out: list[Any] = list(layers)  # checked to be ints just below
    if not out or any(isinstance(i, bool) or not isinstance(i, int) for i in out):
        raise ValueError(f"layers must be None, a slice string like '8:16', or a list of ints; got {layers!r}")
    return out


def _layer_indices(n_layers: int, layers: str | list[int] | None) -> list[int]:
    if isinstance(layers, str):
        a, b = (int(p) if p.strip() else None for p in layers.split(":"))
        picked = list(range(n_layers))[slice(a, b)]
        if not picked:
            raise ValueError(f"layers {layers!r} selects no layer of a {n_layers}-layer model")
        return picked
    return resolve_layers(n_layers, layers)


# ---------------------------------------------------------------------------- the reranker


class AttentionReranker(BaseReranker):
    """Zero-shot reranking by calibrated query-to-document attention (ICR); no generation.

    Args:
        model: hub id, local folder, ``.gguf`` file, or a :class:`ScoringCore` (Llama, Mistral,
            Qwen2/2.5/3 or Gemma family; other architectures raise ``ValueError``).
        prompt: ``"retrieval"`` (find what is relevant to the query) or ``"qa"`` (answer the
            question from the paragraphs).
        layers: decoder layers summed: ``None`` (all), a slice string (``"0:12"``, ``"-8:"``)
            or a list of indices. Layers after the last one chosen are not run.
        order: ``"retrieval"`` keeps the input order in the prompt; ``"reversed"`` puts the
            first input document last, nearest the query.
        doc_max_tokens: per-document token budget (longer documents are cut, and counted).
        calibrate: subtract the content-free query's attention (the paper's calibration).
        outlier_std: drop document tokens whose score is below ``mean - outlier_std * std``;
            ``None`` keeps every token.
        content_free_query: the calibration query.
        window_size: documents per prompt; ``None`` puts all in one prompt when it fits the
            context, else the most that fit. Windows slide from the bottom of the list up.
        window_stride: documents the window moves by (``None``: half the window).
        device, dtype, attn_implementation, trust_remote_code: passed to the shared core.

    Scores are the calibrated attention sums (per query token, summed over heads and layers).
    With several windows, a document's score is its sum in the last window that scored it
    minus ``tier * (2 * heads * layers + 1)``, ``tier`` counting windows from the top of the
    list, so the final order is the sliding-window order.

    Example:
        >>> r = AttentionReranker("path/to/SmolLM2-135M-Instruct", order="reversed")  # doctest: +SKIP
        >>> [h.index for h in r.rerank("capital of France", ["Berlin.", "Paris is the capital."])]  # doctest: +SKIP
        [1, 0]
    """

    name = "attention"

    def __init__(
        self,
        model: str | os.PathLike[str] | ScoringCore,
        *,
        prompt: Literal["retrieval", "qa"] = "retrieval",
        layers: str | Sequence[int] | None = None,
        order: Literal["retrieval", "reversed"] = "retrieval",
        doc_max_tokens: int = 256,
        calibrate: bool = True,
        outlier_std: float | None = 2.0,
        content_free_query: str = "N/A",
        window_size: int | None = None,
        window_stride: int | None = None,
        device: str | None = None,
        dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None,
        attn_implementation: Literal["sdpa", "eager"] | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if prompt not in PROMPTS:
            raise ValueError(f"prompt must be one of {sorted(PROMPTS)}, got {prompt!r}")
        if order not in ("retrieval", "reversed"):
            raise ValueError(f"order must be 'retrieval' or 'reversed', got {order!r}")
        check_positive_int("doc_max_tokens", doc_max_tokens)
        check_bool("calibrate", calibrate)
        check_bool("trust_remote_code", trust_remote_code)
        if outlier_std is not None and (isinstance(outlier_std, bool) or not isinstance(outlier_std, (int, float))
                                        or outlier_std < 0):
            raise ValueError(f"outlier_std must be a non-negative number or None, got {outlier_std!r}")
        if not isinstance(content_free_query, str) or not content_free_query.strip():
            raise ValueError("content_free_query must be a non-empty string")
        for arg, value in (("window_size", window_size), ("window_stride", window_stride)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{arg} must be a positive int or None, got {value!r}")
        if window_size is not None and window_stride is not None and window_stride > window_size:
            raise ValueError(f"window_stride ({window_stride}) must not exceed window_size ({window_size})")
        self.layers = parse_layers(layers)
        self.core = resolve_core(
            model,
            device=device,
            dtype=dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        check_supported(self.core.model)
        cfg = self.core.model.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self._layer_ids = _layer_indices(int(text_cfg.num_hidden_layers), self.layers)
        self._n_heads = int(text_cfg.num_attention_heads)
        self.prompt = prompt
        self.order = order
        self.doc_max_tokens = doc_max_tokens
        self.calibrate = calibrate
        self.outlier_std = None if outlier_std is None else float(outlier_std)
        self.content_free_query = content_free_query
        self.window_size = window_size
        self.window_stride = window_stride
        self.last_stats: dict[str, float] = {}

    # ------------------------------------------------------------------ prompts
    def _encode(self, query_ids: list[int], docs: Sequence[str]) -> tuple[list[int], list[tuple[int, int]], int]:
        """Prompt ids, document spans (in ``docs`` order) and where the query starts."""
        head, before_query = PROMPTS[self.prompt]
        positions = list(range(len(docs)))
        if self.order == "reversed":
            positions.reverse()
        parts: list[Any] = [head]
        for k, i in enumerate(positions, start=1):
            parts += [f"[{k}] ", Document(docs[i]), _DOC_SEP]
        parts += [before_query, query_ids]
        enc = self.core.encode_chat(parts, doc_max_tokens=self.doc_max_tokens)
        # Parts are tokenized separately, so the query starts right after these two texts.
        q_start = enc.spans[-1][1] + len(self.core.tokenize(_DOC_SEP)) + len(self.core.tokenize(before_query))
        if enc.input_ids[q_start : q_start + len(query_ids)] != query_ids:
            raise RuntimeError("internal error: query tokens not found where expected in the prompt")
        spans: list[tuple[int, int]] = [(0, 0)] * len(docs)
        for span, i in zip(enc.spans, positions, strict=True):
            spans[i] = span
        return enc.input_ids, spans, q_start

    def _fit_window(self, query_ids: list[int], docs: Sequence[str]) -> int:
        """The most documents per prompt that fit the context (at least one)."""
        head, before_query = PROMPTS[self.prompt]
        fixed = len(self.core.encode_chat([head, before_query, query_ids]).input_ids)
        fixed += max(0, len(self.core.tokenize(self.content_free_query)) - len(query_ids))
        per_doc = max(
            min(len(self.core.tokenize(d)), self.doc_max_tokens) for d in docs
        ) + len(self.core.tokenize(f"[{len(docs)}] ")) + len(self.core.tokenize(_DOC_SEP))
        return max(1, (self.core.max_length - fixed) // per_doc)

    # ------------------------------------------------------------------ scoring
    def _score_window(self, query_ids: list[int], cf_ids: list[int], docs: Sequence[str]) -> list[float]:
        ids, spans, q_start = self._encode(query_ids, docs)
        tail = ids[q_start + len(query_ids) :]
        suffixes = [ids[q_start:]] + ([cf_ids + tail] if self.calibrate else [])
        rows = suffix_attention(self.core, ids[:q_start], suffixes, layers=self._layer_ids)
        real = rows[0][: len(query_ids), :q_start]
        cf = rows[1][: len(cf_ids), :q_start] if self.calibrate else None
        tokens = calibrated_token_scores(real, cf)
        keep = outlier_keep_mask(tokens, spans, self.outlier_std)
        doc_tokens = sum(e - s for s, e in spans)
        self._stats["dropped_tokens"] += float(doc_tokens - int(keep.sum()))
        self._stats["prompt_tokens"] += float(q_start + sum(len(s) for s in suffixes))
        self._stats["windows"] += 1.0
        return document_scores(tokens, spans, keep)

    def score(self, query: str, documents: list[str]) -> list[float]:
        self._stats = {"windows": 0.0, "dropped_tokens": 0.0, "prompt_tokens": 0.0}
        query_ids = self.core.tokenize(query)
        cf_ids = self.core.tokenize(self.content_free_query)
        n = len(documents)
        size = self.window_size or n
        if self.window_size is None:
            size = min(n, self._fit_window(query_ids, documents))
        if size >= n:
            scores = self._score_window(query_ids, cf_ids, documents)
        else:
            scores = self._sliding(query_ids, cf_ids, documents, size, self.window_stride or max(1, size // 2))
        self.last_stats = dict(self._stats)
        return scores

    def _sliding(
        self, query_ids: list[int], cf_ids: list[int], docs: Sequence[str], size: int, stride: int
    ) -> list[float]:
        schedule = window_schedule(len(docs), size, min(stride, size))
        ranked = list(range(len(docs)))  # current ranking, best first
        last_score = [0.0] * len(docs)
        tier = [0] * len(docs)
        for w, (start, end) in enumerate(schedule):
            members = ranked[start:end]
            scores = self._score_window(query_ids, cf_ids, [docs[i] for i in members])
            order = sorted(range(len(members)), key=lambda j: -scores[j])
            ranked[start:end] = [members[j] for j in order]
            for j, i in enumerate(members):
                last_score[i] = scores[j]
                tier[i] = len(schedule) - 1 - w
        bound = 2.0 * self._n_heads * len(self._layer_ids) + 1.0
        return [last_score[i] - tier[i] * bound for i in range(len(docs))]

    def _repr_args(self) -> str:
        return f"{self.core.name!r}, prompt={self.prompt!r}, order={self.order!r}, calibrate={self.calibrate}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.core.name,
            "dtype": str(self.core.dtype).removeprefix("torch."),
            "prompt": self.prompt,
            "layers": self.layers if isinstance(self.layers, str) or self.layers is None else list(self.layers),
            "order": self.order,
            "doc_max_tokens": self.doc_max_tokens,
            "calibrate": self.calibrate,
            "outlier_std": self.outlier_std,
            "content_free_query": self.content_free_query,
            "window_size": self.window_size,
            "window_stride": self.window_stride,
        }
