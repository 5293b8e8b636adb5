"""In-context reranking (ICR): relevance from the attention the query pays to each document.

Ported from "Attention in Large Language Models Yields Efficient Zero-Shot Re-Rankers"
(Chen, Gutiérrez and Su, 2024). The documents come first and the query last in one chat
prompt; no token is generated. Each document's score is the attention mass that the query
tokens put on its tokens, summed over a range of layers and all heads:

1. The instruction and documents (the prefix) run once; the real query and a content-free
   query ("N/A") then each run on that prefix's KV cache, so calibration costs only the
   query tokens (:meth:`~rerank_plugins.scoring.ScoringCore.suffix_attention`).
2. Per document token: the attention averaged over the real query's tokens minus the same
   average for the content-free query (averages, so queries of different lengths compare).
3. Calibrated token scores below ``mean - outlier_std * std`` (over all document tokens) are
   dropped, as in the paper; a document's score is the sum over its remaining tokens.

``heads`` narrows the sum to chosen (layer, head) pairs, the retrieval heads of QRHead
(:mod:`rerank_plugins.rerankers.heads`): a list of pairs, a head profile file, or ``"auto"``
(the default: a profile shipped for the loaded model, when there is one; else every head).
Layers above the highest chosen head are not run.

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
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, Strict, StrictBool, StrictInt, StrictStr, field_validator, model_validator

from rerank_plugins.options import LLMOptions, PositiveInt
from rerank_plugins.rerankers.base import ModelReranker
from rerank_plugins.rerankers.heads import HeadProfile, backend_identity, find_profile
from rerank_plugins.rerankers.windows import window_schedule
from rerank_plugins.scoring import Document
from rerank_plugins.scoring.attention import resolve_heads, resolve_layers, span_sums
from rerank_plugins.types import Call

__all__ = [
    "PROMPTS",
    "AttentionOptions",
    "AttentionReranker",
    "calibrated_token_scores",
    "document_scores",
    "outlier_keep_mask",
    "outlier_keep_masks",
    "parse_heads",
    "parse_layers",
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


def outlier_keep_masks(
    token_scores: torch.Tensor, spans: Sequence[tuple[int, int]], n_std: float | None = 2.0
) -> torch.Tensor:
    """:func:`outlier_keep_mask` for each row of ``[rows, n]`` token scores (e.g. one row per head).

    Example:
        >>> outlier_keep_masks(torch.tensor([[1.0, 1.0, -9.0], [1.0, 2.0, 3.0]]), [(0, 3)], 1.0).tolist()
        [[True, True, False], [True, True, True]]
    """
    inside = torch.zeros(token_scores.shape[-1], dtype=torch.bool)
    for s, e in spans:
        inside[s:e] = True
    keep = inside.expand(token_scores.shape).clone()
    if n_std is None or not bool(inside.any()):
        return keep
    values = token_scores[:, inside].double()
    threshold = values.mean(-1) - n_std * values.std(-1, unbiased=False)
    return keep & (token_scores.double() >= threshold[:, None])


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


def parse_heads(heads: Any) -> Any:
    """Validate a head choice: ``None`` (every head), ``"auto"``, a profile path, or ``(layer, head)`` pairs.

    Pairs come as a sequence of two-int sequences (checked against the model when the reranker
    is built); anything else is a ``ValueError`` naming ``heads``.

    Example:
        >>> parse_heads([[12, 3], (14, 0)]), parse_heads("auto")
        ([(12, 3), (14, 0)], 'auto')
    """
    if heads is None or isinstance(heads, str):
        if isinstance(heads, str) and not heads.strip():
            raise ValueError('heads must be None, "auto", a head profile path or a list of (layer, head) pairs')
        return heads
    if isinstance(heads, os.PathLike):
        return os.fspath(heads)
    if isinstance(heads, (bytes, bytearray)) or not isinstance(heads, Sequence):
        raise ValueError(
            f'heads must be None, "auto", a head profile path or a list of (layer, head) pairs, got {heads!r}'
        )
    out: list[tuple[int, int]] = []
    for pair in heads:
        ok = isinstance(pair, Sequence) and not isinstance(pair, (str, bytes)) and len(pair) == 2
        if not ok or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in pair):
            raise ValueError(f"heads must be (layer, head) pairs of ints >= 0, got {pair!r}")
        out.append((int(pair[0]), int(pair[1])))
    if not out:
        raise ValueError("heads must name at least one (layer, head) pair (None means every head)")
    if len(set(out)) != len(out):
        raise ValueError(f"heads names a (layer, head) pair twice: {out!r}")
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


class AttentionOptions(LLMOptions):
    """Options of :class:`AttentionReranker`."""

    prompt: Literal["retrieval", "qa"] = Field(
        default="retrieval",
        description='"retrieval" (find what is relevant to the query) or "qa" (answer the question from the '
        "paragraphs).",
    )
    layers: StrictStr | list[StrictInt] | None = Field(
        default=None,
        description='Decoder layers summed: None (all), a slice string ("0:12", "-8:") or a list of indices; '
        "layers after the last one chosen are not run.",
    )
    heads: StrictStr | list[tuple[StrictInt, StrictInt]] | None = Field(
        default="auto",
        description='Attention heads summed: "auto" (a head profile shipped for the loaded model, else every '
        "head), None (every head of the chosen layers), a head profile JSON file, or a list of (layer, head) "
        "pairs; layers above the highest chosen head are not run.",
    )
    order: Literal["retrieval", "reversed"] = Field(
        default="retrieval",
        description='"retrieval" keeps the input order in the prompt; "reversed" puts the first input document '
        "last, nearest the query.",
    )
    calibrate: StrictBool = Field(
        default=True, description="Subtract the content-free query's attention (the paper's calibration)."
    )
    outlier_std: Annotated[float, Strict()] | None = Field(
        default=2.0, ge=0, description="Drop document tokens scoring below mean - outlier_std * std; None keeps all."
    )
    content_free_query: StrictStr = Field(default="N/A", description="The calibration query.")
    window: PositiveInt | None = Field(
        default=None,
        description="Documents per prompt; None puts all in one prompt when they fit the context, else the most "
        "that fit. Windows slide from the bottom of the list up.",
    )
    stride: PositiveInt | None = Field(
        default=None, description="Documents the window moves by (None: half the window)."
    )

    @field_validator("layers", mode="before")
    @classmethod
    def _layers(cls, value: Any) -> Any:
        return parse_layers(value)

    @field_validator("heads", mode="before")
    @classmethod
    def _heads(cls, value: Any) -> Any:
        return parse_heads(value)

    @field_validator("content_free_query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty string")
        return value

    @model_validator(mode="after")
    def _stride_fits(self) -> AttentionOptions:
        if self.window is not None and self.stride is not None and self.stride > self.window:
            raise ValueError(f"stride ({self.stride}) must not exceed window ({self.window})")
        if self.layers is not None and self.heads not in (None, "auto"):
            raise ValueError("heads and layers exclude each other (heads name their layers)")
        return self


class AttentionReranker(ModelReranker):
    """Zero-shot reranking by calibrated query-to-document attention (ICR); no generation.

    Args:
        model: hub id, local folder, ``.gguf`` file, or a scoring backend with the
            ``"attention"`` primitive (the in-process core, for Llama, Mistral, Qwen2/2.5/3 or
            Gemma models; other architectures and served models raise ``ValueError``).
        **options: see :class:`AttentionOptions`: ``prompt``, ``layers``, ``heads``, ``order``,
            ``doc_max_tokens``, ``calibrate``, ``outlier_std``, ``content_free_query``,
            ``window``, ``stride``, and how the model is loaded.

    Scores are the calibrated attention sums (per query token, summed over the chosen heads:
    every head of ``layers``, or the ``heads`` pairs). With several windows, a document's
    score is its sum in the last window that scored it minus ``tier * (2 * pairs + 1)``,
    ``pairs`` the number of (layer, head) pairs summed and ``tier`` counting windows from the
    top of the list, so the final order is the sliding-window order. ``rerank_with_stats``
    returns the call's ``windows``, ``dropped_tokens`` and ``prompt_tokens``; ``describe()``
    names the head profile in use (``head_profile``) and how many heads are summed
    (``head_count``). ``relevance`` (the normalised score) is min-max within the call: 1 for
    the document the query attends to most, 0 for the least; the attention sums depend on the
    other documents in the prompt, so neither they nor the relevance compare across calls.

    Example:
        >>> r = AttentionReranker("path/to/SmolLM2-135M-Instruct", order="reversed")  # doctest: +SKIP
        >>> [h.index for h in r.rerank("capital of France", ["Berlin.", "Paris is the capital."])]  # doctest: +SKIP
        [1, 0]
    """

    name = "attention"
    options_class = AttentionOptions
    options: AttentionOptions
    needs = ("prompts", "attention")
    repr_settings = ("prompt", "order", "calibrate")

    def _prepare(self) -> None:
        n_layers, self._n_heads = self.core.attention_layout()
        self._profile: HeadProfile | None = None
        self._heads: list[tuple[int, int]] | None = None
        heads = self.options.heads
        if heads == "auto" and self.options.layers is None:
            self._profile = find_profile(backend_identity(self.core), prompt=self.options.prompt)
        elif isinstance(heads, str) and heads != "auto":
            self._profile = HeadProfile.load(heads)
            if not self._profile.matches(backend_identity(self.core)):
                logger.warning(
                    "head profile %s was chosen on %r, not on this model (%s); using its heads anyway",
                    heads, self._profile.model.get("name"), self.core.name,
                )
        elif isinstance(heads, list):
            self._heads = resolve_heads(n_layers, self._n_heads, heads)
        if self._profile is not None:
            try:
                self._heads = resolve_heads(n_layers, self._n_heads, self._profile.pairs())
            except ValueError as e:
                raise ValueError(f"head profile {self._profile.label}: {e}") from None
        if self._heads is None:
            self._layer_ids = _layer_indices(n_layers, self.options.layers)
        else:
            self._layer_ids = sorted({layer for layer, _ in self._heads})

    def _derived_settings(self) -> dict[str, Any]:
        pairs = len(self._heads) if self._heads is not None else self._n_heads * len(self._layer_ids)
        return {"head_profile": self._profile.label if self._profile else None, "head_count": pairs}

    def _capture(self, prefix: list[int], suffixes: list[list[int]]) -> list[torch.Tensor]:
        """The suffix rows summed over the chosen heads (every head of the chosen layers by default)."""
        if self._heads is None:
            return self.core.suffix_attention(prefix, suffixes, layers=self._layer_ids)
        return self.core.suffix_attention(prefix, suffixes, heads=self._heads)

    # ------------------------------------------------------------------ prompts
    def _encode(self, query_ids: list[int], docs: Sequence[str]) -> tuple[list[int], list[tuple[int, int]], int]:
        """Prompt ids, document spans (in ``docs`` order) and where the query starts."""
        head, before_query = PROMPTS[self.options.prompt]
        positions = list(range(len(docs)))
        if self.options.order == "reversed":
            positions.reverse()
        parts: list[Any] = [head]
        for k, i in enumerate(positions, start=1):
            parts += [f"[{k}] ", Document(docs[i]), _DOC_SEP]
        parts += [before_query, query_ids]
        enc = self.core.encode_chat(parts, doc_max_tokens=self.options.doc_max_tokens)
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
        head, before_query = PROMPTS[self.options.prompt]
        fixed = len(self.core.encode_chat([head, before_query, query_ids]).input_ids)
        fixed += max(0, len(self.core.tokenize(self.options.content_free_query)) - len(query_ids))
        per_doc = max(
            min(len(self.core.tokenize(d)), self.options.doc_max_tokens) for d in docs
        ) + len(self.core.tokenize(f"[{len(docs)}] ")) + len(self.core.tokenize(_DOC_SEP))
        return max(1, (self.core.max_length - fixed) // per_doc)

    # ------------------------------------------------------------------ scoring
    def _score_window(self, query_ids: list[int], cf_ids: list[int], docs: Sequence[str], call: Call) -> list[float]:
        ids, spans, q_start = self._encode(query_ids, docs)
        tail = ids[q_start + len(query_ids) :]
        calibrate = self.options.calibrate
        suffixes = [ids[q_start:]] + ([cf_ids + tail] if calibrate else [])
        rows = self._capture(ids[:q_start], suffixes)
        real = rows[0][: len(query_ids), :q_start]
        cf = rows[1][: len(cf_ids), :q_start] if calibrate else None
        tokens = calibrated_token_scores(real, cf)
        keep = outlier_keep_mask(tokens, spans, self.options.outlier_std)
        doc_tokens = sum(e - s for s, e in spans)
        call.count("dropped_tokens", doc_tokens - int(keep.sum()))
        call.count("prompt_tokens", q_start + sum(len(s) for s in suffixes))
        call.count("windows")
        return document_scores(tokens, spans, keep)

    def _score_one(self, query: str, documents: list[str], call: Call) -> list[float]:
        for key in ("windows", "dropped_tokens", "prompt_tokens"):
            call.stats.setdefault(key, 0.0)
        query_ids = self.core.tokenize(query)
        cf_ids = self.core.tokenize(self.options.content_free_query)
        n = len(documents)
        size = self.options.window or min(n, self._fit_window(query_ids, documents))
        if size >= n:
            return self._score_window(query_ids, cf_ids, documents, call)
        stride = self.options.stride or max(1, size // 2)
        return self._sliding(query_ids, cf_ids, documents, size, stride, call)

    def _sliding(
        self, query_ids: list[int], cf_ids: list[int], docs: Sequence[str], size: int, stride: int, call: Call
    ) -> list[float]:
        schedule = window_schedule(len(docs), size, min(stride, size))
        ranked = list(range(len(docs)))  # current ranking, best first
        last_score = [0.0] * len(docs)
        tier = [0] * len(docs)
        for w, (start, end) in enumerate(schedule):
            members = ranked[start:end]
            scores = self._score_window(query_ids, cf_ids, [docs[i] for i in members], call)
            order = sorted(range(len(members)), key=lambda j: -scores[j])
            ranked[start:end] = [members[j] for j in order]
            for j, i in enumerate(members):
                last_score[i] = scores[j]
                tier[i] = len(schedule) - 1 - w
        pairs = len(self._heads) if self._heads is not None else self._n_heads * len(self._layer_ids)
        bound = 2.0 * pairs + 1.0
        return [last_score[i] - tier[i] * bound for i in range(len(docs))]

    # ------------------------------------------------------------------ per-head scores (head selection)
    @torch.inference_mode()
    def head_document_scores(self, query: str, documents: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Each (layer, head)'s document scores for one prompt holding every document.

        The prompt, calibration and outlier rule are those of :meth:`rerank`, applied to each
        head alone. Used by :func:`~rerank_plugins.rerankers.head_selection.select_heads`.

        Returns:
            ``[pairs, len(documents)]`` per-head scores (every head of the chosen layers,
            layer-major, or the ``heads`` pairs in order), the ``[len(documents)]`` scores of
            those heads summed (what :meth:`rerank` gives for one window), and the prompt tokens.

        Raises:
            ValueError: when the documents do not fit one prompt.
        """
        docs = list(documents)
        if not docs:
            raise ValueError("documents must not be empty")
        query_ids = self.core.tokenize(query)
        cf_ids = self.core.tokenize(self.options.content_free_query)
        if len(docs) > self._fit_window(query_ids, docs):
            raise ValueError(
                f"{len(docs)} documents do not fit one prompt of {self.core.max_length} tokens; "
                "pass fewer candidates or lower doc_max_tokens"
            )
        ids, spans, q_start = self._encode(query_ids, docs)
        tail = ids[q_start + len(query_ids) :]
        calibrate = self.options.calibrate
        suffixes = [ids[q_start:]] + ([cf_ids + tail] if calibrate else [])
        chosen = {"heads": self._heads} if self._heads is not None else {"layers": self._layer_ids}
        rows = self.core.suffix_attention(ids[:q_start], suffixes, per_head=True, **chosen)
        tokens = rows[0][:, : len(query_ids), :q_start].float().mean(-2)
        if calibrate:
            tokens = tokens - rows[1][:, : len(cf_ids), :q_start].float().mean(-2)
        keep = outlier_keep_masks(tokens, spans, self.options.outlier_std)
        per_head = span_sums(tokens * keep.to(tokens.dtype), spans)
        summed_tokens = tokens.sum(0)
        summed = torch.tensor(document_scores(summed_tokens, spans, outlier_keep_mask(summed_tokens, spans,
                                                                                       self.options.outlier_std)))
        return per_head, summed, q_start + sum(len(x) for x in suffixes)
