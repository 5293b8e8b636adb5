"""Attention from query tokens onto document spans, without n x n attention maps.

The primitive behind attention reranking (ICR, "Attention in Large Language Models Yields
Efficient Zero-Shot Re-Rankers", Chen et al., 2024). A prompt is split into a *prefix*
(instruction and documents) and one or more *suffixes* (a query and the chat-template tail).

1. The prefix runs once under the model's own attention kernel (SDPA by default), keeping
   its KV cache. No attention weights are produced for it.
2. Each suffix runs on that cache (restored between suffixes, so calibration with a
   content-free query costs only its own tokens). During those passes the model's attention
   implementation is switched to a capturing function registered through transformers'
   ``AttentionInterface``. It receives the model's own queries and keys (RoPE applied, q/k
   norms and query pre-scaling done by the model itself) and computes
   ``softmax(q K^T * scaling [softcapped] + mask)`` for the suffix rows only, repeating
   grouped KV heads, then returns the attention output exactly as eager attention does.

The recorded rows are summed over every head of the chosen layers, over chosen ``(layer, head)``
pairs only, or kept one slice per layer or per (layer, head) (:func:`plan_capture`). Work
memory per layer is ``suffix_len x total_len x heads``, never ``total_len^2``; what is kept is
``suffix_len x total_len`` per output slice. Supported model
types are listed in :data:`SUPPORTED_MODEL_TYPES` (Llama, Mistral, Qwen2, Qwen3, Gemma 1-3
text models, including Gemma 2 logit soft-capping and sliding-window layers); any other
architecture raises ``ValueError``.

Example:
    >>> from rerank_plugins.scoring import get_core  # doctest: +SKIP
    >>> core = get_core("path/to/SmolLM2-135M-Instruct")  # doctest: +SKIP
    >>> ids = core.tokenize("Paris is the capital of France. Question: capital of France?")  # doctest: +SKIP
    >>> rows = core.suffix_attention(ids[:8], [ids[8:]])[0]  # [suffix_len, total_len]  # doctest: +SKIP
    >>> span_sums(rows, [(0, 8)])  # mass of each suffix token on the first 8 tokens  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rerank_plugins.scoring.model import kv_cache_kwargs

__all__ = [
    "CAPTURE_IMPLEMENTATION",
    "SUPPORTED_MODEL_TYPES",
    "attention_to_spans",
    "capture_suffix_attention",
    "check_supported",
    "plan_capture",
    "resolve_heads",
    "resolve_layers",
    "span_sums",
]

logger = logging.getLogger(__name__)

#: name under which the capturing attention function is registered with transformers
CAPTURE_IMPLEMENTATION = "rerank_plugins_capture"

#: ``config.model_type`` values whose attention modules route through ``AttentionInterface``
#: with the keyword arguments handled here (checked against eager attention in the tests).
SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"})

_registered = False
_register_lock = threading.Lock()
_active = threading.local()


class _StopForward(Exception):
    """Raised inside the forward pass once the last wanted layer has run."""


@dataclass(frozen=True)
class _LayerPlan:
    """What one layer adds to the capture: its heads summed into ``slot``, or each head into its own slot.

    ``heads`` ``None`` means every head of the layer, summed in one operation over the head axis.
    """

    slot: int = 0
    heads: list[int] | None = None
    slots: list[int] | None = None  # one slot per entry of ``heads`` (per-head capture)


class _Capture:
    """Per-call state: which layers (and heads) to record and the running sums of their attention rows."""

    def __init__(
        self, plan: dict[int, _LayerPlan], n_slots: int, total: int, q_len: int, stop_after: int | None
    ) -> None:
        self.plan = plan
        self.total = total
        self.rows = torch.zeros(n_slots, q_len, total, dtype=torch.float32)
        self.seen: set[int] = set()
        self.stop_after = stop_after

    def add(self, layer: int, probs: torch.Tensor) -> None:
        """Add one layer's suffix-row probabilities ``[heads, q_len, kv_len]`` to its slots."""
        plan = self.plan.get(layer)
        if plan is None:
            return
        # Right-align: sliding-window caches hold only the last kv_len positions.
        cols = slice(self.total - probs.shape[-1], None)
        if plan.slots is not None:
            picked = probs if plan.heads is None else probs[plan.heads]
            self.rows[plan.slots, :, cols] += picked.float().cpu()
        elif plan.heads is None:
            self.rows[plan.slot, :, cols] += probs.sum(0).float().cpu()
        else:
            self.rows[plan.slot, :, cols] += probs[plan.heads].sum(0).float().cpu()


def plan_capture(
    n_layers: int,
    n_heads: int,
    *,
    layers: Sequence[int] | range | None = None,
    per_layer: bool = False,
    heads: Sequence[tuple[int, int]] | None = None,
    per_head: bool = False,
) -> tuple[dict[int, _LayerPlan], int]:
    """Which layer and head goes into which output slot, and how many slots there are.

    Slots: one (everything summed), one per layer (``per_layer``), one per (layer, head)
    (``per_head``: the pairs of ``heads`` in their order, or every head of ``layers``
    layer-major). ``heads`` and ``layers`` exclude each other, as do ``per_layer`` and
    ``per_head``.

    Example:
        >>> plan, n = plan_capture(4, 2, heads=[(3, 1), (0, 0)], per_head=True)
        >>> n, sorted(plan), plan[3].slots, plan[3].heads
        (2, [0, 3], [0], [1])
    """
    if per_layer and per_head:
        raise ValueError("per_layer and per_head exclude each other")
    if heads is None:
        wanted = resolve_layers(n_layers, layers)
        if per_head:
            every = list(range(n_heads))
            plan = {la: _LayerPlan(heads=None, slots=[k * n_heads + h for h in every]) for k, la in enumerate(wanted)}
            return plan, len(wanted) * n_heads
        if per_layer:
            return {la: _LayerPlan(slot=k) for k, la in enumerate(wanted)}, len(wanted)
        return {la: _LayerPlan(slot=0) for la in wanted}, 1
    if layers is not None:
        raise ValueError("pass heads or layers, not both (heads name their layers)")
    if per_layer:
        raise ValueError("per_layer applies to layers, not to heads (use per_head)")
    pairs = resolve_heads(n_layers, n_heads, heads)
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for j, (la, h) in enumerate(pairs):
        by_layer.setdefault(la, []).append((h, j))
    if per_head:
        plan = {la: _LayerPlan(heads=[h for h, _ in hs], slots=[j for _, j in hs]) for la, hs in by_layer.items()}
        return plan, len(pairs)
    return {la: _LayerPlan(slot=0, heads=sorted(h for h, _ in hs)) for la, hs in by_layer.items()}, 1


def resolve_heads(n_layers: int, n_heads: int, heads: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Validate ``(layer, head)`` pairs against the model's layout; order kept, duplicates refused.

    Example:
        >>> resolve_heads(24, 14, [(12, 3), [0, 13]])
        [(12, 3), (0, 13)]
    """
    if isinstance(heads, (str, bytes)) or not isinstance(heads, Sequence):
        raise ValueError(f"heads must be a list of (layer, head) pairs, got {type(heads).__name__}")
    out: list[tuple[int, int]] = []
    for pair in heads:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(f"heads must be (layer, head) pairs, got {pair!r}")
        la, h = pair
        if any(isinstance(x, bool) or not isinstance(x, int) for x in (la, h)):
            raise ValueError(f"heads must be pairs of ints, got {pair!r}")
        if not 0 <= la < n_layers or not 0 <= h < n_heads:
            raise ValueError(
                f"head {(la, h)} is out of range for a model with {n_layers} layers of {n_heads} heads"
            )
        if (la, h) in out:
            raise ValueError(f"head {(la, h)} is named twice")
        out.append((la, h))
    if not out:
        raise ValueError("heads must name at least one (layer, head) pair")
    return out


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    if n_rep == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, s, d).reshape(b, h * n_rep, s, d)


def _capture_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Eager attention for the (few) suffix rows, recording their probabilities as the capture plans."""
    if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
        raise ValueError("attention sinks are not supported by the attention-capture primitive")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    n_rep = query.shape[1] // key.shape[1]
    k = _repeat_kv(key, n_rep)
    v = _repeat_kv(value, n_rep)
    # Scores and probabilities in float32 whatever the weights' dtype: bf16 scores near 20 are
    # rounded to steps of 0.125, which moves exp(score) by up to 6%. Only the few suffix rows
    # are computed here, so the float32 product is cheap.
    scores = torch.matmul(query.float(), k.float().transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    q_len, kv_len = query.shape[2], key.shape[2]
    if attention_mask is None:
        # Queries are the last q_len positions (keys are right-aligned with them).
        q_pos = torch.arange(kv_len - q_len, kv_len, device=query.device)[:, None]
        k_pos = torch.arange(kv_len, device=query.device)[None, :]
        allowed = k_pos <= q_pos
        if sliding_window is not None:
            allowed &= k_pos > q_pos - sliding_window
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask[..., :kv_len], torch.finfo(scores.dtype).min)
    else:
        scores = scores + attention_mask[..., :kv_len]
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
    out = torch.matmul(probs.to(query.dtype), v).transpose(1, 2).contiguous()
    cap: _Capture | None = getattr(_active, "capture", None)
    layer = getattr(module, "layer_idx", None)
    if cap is not None and layer is not None:
        cap.seen.add(int(layer))
        cap.add(int(layer), probs[0])
        if cap.stop_after is not None and int(layer) >= cap.stop_after:
            raise _StopForward
    return out, None


def _register() -> None:
    global _registered
    with _register_lock:
        if _registered:
            return
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(CAPTURE_IMPLEMENTATION, _capture_attention)
        # Boolean masks (True = attend), in the same layout SDPA gets.
        AttentionMaskInterface.register(CAPTURE_IMPLEMENTATION, sdpa_mask)
        _registered = True


def _text_config(model: Any) -> Any:
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def check_supported(model: Any) -> None:
    """Raise ``ValueError`` unless ``model``'s architecture is one the capture handles.

    Example:
        >>> check_supported(core.model)  # doctest: +SKIP
    """
    model_type = getattr(_text_config(model), "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"attention capture does not support model type {model_type!r}; supported: "
            f"{', '.join(sorted(SUPPORTED_MODEL_TYPES))}"
        )


def _decoder_layers(model: Any) -> Any:
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")
    return base, layers


def resolve_layers(n_layers: int, layers: Sequence[int] | range | tuple[int, int] | None) -> list[int]:
    """Sorted, de-duplicated layer indices; ``None`` = all; negative indices count from the end.

    Example:
        >>> resolve_layers(24, None)[-1], resolve_layers(24, range(-4, 0))
        (23, [20, 21, 22, 23])
    """
    if layers is None:
        return list(range(n_layers))
    out = set()
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"layers must be ints, got {i!r}")
        j = i + n_layers if i < 0 else i
        if not 0 <= j < n_layers:
            raise ValueError(f"layer {i} is out of range for a model with {n_layers} layers")
        out.add(j)
    if not out:
        raise ValueError("layers must name at least one layer")
    return sorted(out)


def _has_sliding_layers(model: Any) -> bool:
    cfg = _text_config(model)
    types = getattr(cfg, "layer_types", None)
    if types:
        return any(t != "full_attention" for t in types)
    return getattr(cfg, "sliding_window", None) is not None and bool(getattr(cfg, "use_sliding_window", True))


class _CacheSnapshot:
    """Restore a dynamic KV cache to its prefix state without copying it.

    Dynamic layers grow by concatenation (new tensors), so keeping references to the prefix
    tensors is enough; other cache types fall back to a deep copy per suffix.
    """

    def __init__(self, cache: Any) -> None:
        from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

        layers: list[Any] = list(getattr(cache, "layers", None) or [])
        self.cheap = bool(layers) and all(type(la) in (DynamicLayer, DynamicSlidingWindowLayer) for la in layers)
        self.cache = cache
        if self.cheap:
            self.state = [(la.keys, la.values, getattr(la, "cumulative_length", None)) for la in layers]
        else:
            self.copy = copy.deepcopy(cache)

    def fresh(self) -> Any:
        if not self.cheap:
            return copy.deepcopy(self.copy)
        for la, (k, v, n) in zip(self.cache.layers, self.state, strict=True):
            la.keys, la.values = k, v
            if n is not None:
                la.cumulative_length = n
        return self.cache


def capture_suffix_attention(
    model: Any,
    prefix: list[int],
    suffixes: list[list[int]],
    *,
    layers: Sequence[int] | range | None,
    per_layer: bool,
    device: torch.device,
    heads: Sequence[tuple[int, int]] | None = None,
    per_head: bool = False,
) -> list[torch.Tensor]:
    """Run ``prefix`` once, then each suffix on its KV cache, capturing the suffix rows' attention.

    The caller (:meth:`~rerank_plugins.scoring.ScoringCore.suffix_attention`) validates the
    ids, checks the context length, holds the model lock and counts the passes. Layers after
    the last one wanted (the highest layer of ``heads``, else of ``layers``) are not run at all
    (unless a sliding-window layer's mask depends on them). :func:`plan_capture` says which
    combinations of ``layers``, ``heads``, ``per_layer`` and ``per_head`` are allowed.

    Returns:
        One float32 CPU tensor per suffix, shape ``[len(suffix), len(prefix) + len(suffix)]``
        (summed over the chosen heads and layers), ``[len(layers), ...]`` with ``per_layer``,
        or ``[pairs, ...]`` with ``per_head`` (one slice per (layer, head), in the order of
        ``heads``, or every head of ``layers`` layer-major).
    """
    check_supported(model)
    base, decoder_layers = _decoder_layers(model)
    n_heads = int(_text_config(model).num_attention_heads)
    plan, n_slots = plan_capture(
        len(decoder_layers), n_heads, layers=layers, per_layer=per_layer, heads=heads, per_head=per_head
    )
    wanted = sorted(plan)
    # Stopping early is safe only when no mask depends on a (skipped) sliding-window layer.
    stop_after = wanted[-1] if wanted[-1] < len(decoder_layers) - 1 and not _has_sliding_layers(model) else None
    _register()
    config = model.config
    results: list[torch.Tensor] = []
    hook = None
    if stop_after is not None:

        def _stop(*_: Any) -> None:
            raise _StopForward

        hook = decoder_layers[stop_after].register_forward_hook(_stop)
    from transformers import DynamicCache

    # Our own cache object: it stays reachable when the forward pass is stopped early.
    cache = DynamicCache(config=base.config)
    try:
        with contextlib.suppress(_StopForward):
            base(input_ids=torch.tensor([prefix], device=device), use_cache=True, **kv_cache_kwargs(base, cache))
    finally:
        if hook is not None:
            hook.remove()
    snapshot = _CacheSnapshot(cache)
    original = config._attn_implementation
    try:
        config._attn_implementation = CAPTURE_IMPLEMENTATION
        for r in suffixes:
            cap = _Capture(plan, n_slots, len(prefix) + len(r), len(r), stop_after)
            _active.capture = cap
            try:
                base(
                    input_ids=torch.tensor([r], device=device),
                    use_cache=True,
                    **kv_cache_kwargs(base, snapshot.fresh()),
                )
            except _StopForward:
                pass
            finally:
                _active.capture = None
            missing = set(wanted) - cap.seen
            if missing:
                raise RuntimeError(
                    f"layers {sorted(missing)} of {type(model).__name__} did not route through "
                    "transformers' AttentionInterface; attention capture cannot support this model"
                )
            results.append(cap.rows if per_layer or per_head else cap.rows[0])
    finally:
        config._attn_implementation = original
        snapshot.fresh()
    return results


def span_sums(rows: torch.Tensor, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Sum the last axis of ``rows`` over each half-open ``(start, end)`` span.

    Example:
        >>> span_sums(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), [(0, 2), (2, 4), (1, 1)])
        tensor([[3., 7., 0.]])
    """
    n = rows.shape[-1]
    for s, e in spans:
        if not 0 <= s <= e <= n:
            raise ValueError(f"span {(s, e)} is outside [0, {n}]")
    if not spans:
        return rows.new_zeros((*rows.shape[:-1], 0))
    # float64 prefix sums: differences of long float32 cumsums lose precision.
    cs = torch.cat([rows.new_zeros((*rows.shape[:-1], 1), dtype=torch.float64), rows.double().cumsum(-1)], -1)
    starts = torch.tensor([s for s, _ in spans])
    ends = torch.tensor([e for _, e in spans])
    return (cs[..., ends] - cs[..., starts]).to(rows.dtype)


def attention_to_spans(
    backend: Any,
    input_ids: Sequence[int],
    spans: Sequence[tuple[int, int]],
    query_span: tuple[int, int],
    *,
    layers: Sequence[int] | range | None = None,
    heads: Sequence[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """Attention mass from each query token onto each span, summed over heads and ``layers`` (or ``heads``).

    Everything before ``query_span`` is the prefix (run once, no attention weights kept); the
    query and whatever follows it run as a suffix whose attention rows are captured.

    Args:
        backend: a scoring backend with the ``"attention"`` capability (a
            :class:`~rerank_plugins.scoring.ScoringCore`).
        input_ids: the whole prompt.
        spans: ``(start, end)`` token spans (e.g. documents), all before ``query_span``.
        query_span: ``(start, end)`` of the query tokens.
        layers: decoder layers to sum over (``None``: all).
        heads: ``(layer, head)`` pairs to sum over instead of whole layers.

    Returns:
        float32 tensor ``[query_len, len(spans)]``.

    Example:
        >>> enc = core.encode_chat([Document("Paris is in France."), "Query: ", Document("France")])  # doctest: +SKIP
        >>> attention_to_spans(core, enc.input_ids, enc.spans[:1], enc.spans[1])  # doctest: +SKIP
    """
    ids = [int(t) for t in input_ids]
    q0, q1 = query_span
    if not 0 < q0 < q1 <= len(ids):
        raise ValueError(f"query_span {query_span} must be a non-empty span after position 0 within the prompt")
    for s, e in spans:
        if not 0 <= s <= e <= q0:
            raise ValueError(f"span {(s, e)} must lie before the query span {query_span}")
    chosen = {"layers": layers} if heads is None else {"heads": heads, "layers": layers}
    rows = backend.suffix_attention(ids[:q0], [ids[q0:]], **chosen)[0]
    return span_sums(rows[: q1 - q0], spans)
