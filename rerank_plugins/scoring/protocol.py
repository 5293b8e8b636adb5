"""The one door to a model: the primitives strategies use, and which of them a backend has.

Strategies never touch a model, its lock, its config or a backend's private members; they call
the methods below. :class:`~rerank_plugins.scoring.ScoringCore` (a transformers model in this
process) implements every LLM primitive; a served model over HTTP implements the ones its server
offers; :class:`~rerank_plugins.scoring.CrossEncoderCore` implements only ``pair_scores``; test
doubles implement what the strategy under test needs. A backend lists what it implements in
``capabilities``, and a strategy checks its needs with :func:`require` when it is built, so a
missing primitive is a clear error at construction, never a crash in the middle of a query.

Capabilities and the methods they promise:

``"prompts"``
    ``tokenize(text)``, ``token_ids(words)``, ``encode_chat(parts, ...)``,
    ``encode_documents(texts, max_tokens)`` and the ``max_length`` attribute (context size).
``"logits"``
    ``next_token_logits(prompts, token_ids, prefix=None)``: scores of chosen next tokens,
    float32 ``[rows, K]``. They are logits or log-probabilities: equal up to one constant per
    row, which every strategy cancels (log-softmax over the candidates, or differences).
``"generate"``
    ``generate(prompts, max_new_tokens)``: greedy continuations, decoded.
``"attention"``
    ``suffix_attention(prefix, suffixes, layers=None, per_layer=False, heads=None, per_head=False)``
    and ``attention_layout()`` (``(layers, heads)``): query-row attention onto every position,
    summed over layers, over chosen ``(layer, head)`` pairs, or kept per layer or per head.
    Optionally ``model_identity()``: what identifies the loaded weights, so that a head profile
    chosen on one model is picked only for that model (:mod:`rerank_plugins.rerankers.heads`).
``"pair_scores"``
    ``pair_scores(query, documents, batch_size)``: one relevance score per (query, document).
``"forward"``
    ``forward(input_ids)``: one bare forward pass, the benchmarks' cost reference.

Every backend also has ``name`` (the model it serves), ``stats`` (process-wide counters,
:class:`~rerank_plugins.scoring.CoreStats`) and ``describe()`` (its settings, for reports).

Example:
    >>> class Constant:  # a test double offering one primitive
    ...     name, capabilities = "constant", frozenset({"pair_scores"})
    ...     def pair_scores(self, query, documents, batch_size=32):
    ...         return [0.0] * len(documents)
    >>> require(Constant(), "pair_scores", strategy="cross-encoder") is None
    True
    >>> try:
    ...     require(Constant(), "logits", strategy="pointwise")
    ... except MissingPrimitiveError as e:
    ...     print(e)
    the pointwise strategy needs next-token log-probabilities ('logits'), which the backend 'constant' does not provide
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from rerank_plugins.scoring.prompts import Document, EncodedPrompt
    from rerank_plugins.scoring.stats import CoreStats

__all__ = [
    "CAPABILITIES",
    "Capability",
    "MissingPrimitiveError",
    "ScoringBackend",
    "checked_logits_request",
    "is_backend",
    "require",
]

Capability = Literal["prompts", "logits", "generate", "attention", "pair_scores", "forward"]

#: every capability, with the words used in error messages
CAPABILITIES: dict[str, str] = {
    "prompts": "tokenization and chat prompts",
    "logits": "next-token log-probabilities",
    "generate": "text generation",
    "attention": "attention weights",
    "pair_scores": "cross-encoder pair scores",
    "forward": "a bare forward pass",
}


class MissingPrimitiveError(ValueError):
    """A strategy was built on a backend that lacks a primitive it needs."""


@runtime_checkable
class ScoringBackend(Protocol):
    """Everything a strategy may call; a backend implements the part named in ``capabilities``."""

    name: str
    capabilities: frozenset[str]

    # "prompts"
    max_length: int

    def tokenize(self, text: str) -> list[int]: ...

    def token_ids(self, words: Sequence[str]) -> list[int]: ...

    def encode_chat(
        self,
        parts: Sequence[str | Document | Sequence[int]],
        *,
        system: str | None = None,
        assistant_prefix: str | Sequence[int] = "",
        doc_max_tokens: int | None = None,
    ) -> EncodedPrompt: ...

    def encode_documents(self, texts: Sequence[str], max_tokens: int) -> list[list[int]]: ...

    # "logits"
    def next_token_logits(
        self,
        prompts: Sequence[Sequence[int]],
        token_ids: Sequence[int] | Sequence[Sequence[int]],
        *,
        prefix: Sequence[int] | None = None,
    ) -> torch.Tensor: ...

    # "generate"
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64) -> list[str]: ...

    # "attention"
    def suffix_attention(
        self,
        prefix: Sequence[int],
        suffixes: Sequence[Sequence[int]],
        *,
        layers: Sequence[int] | None = None,
        per_layer: bool = False,
        heads: Sequence[tuple[int, int]] | None = None,
        per_head: bool = False,
    ) -> list[torch.Tensor]: ...

    def attention_layout(self) -> tuple[int, int]: ...

    # "pair_scores"
    def pair_scores(self, query: str, documents: Sequence[str], batch_size: int = 32) -> list[float]: ...

    # "forward"
    def forward(self, input_ids: Sequence[int]) -> None: ...

    # every backend
    @property
    def stats(self) -> CoreStats: ...

    def describe(self) -> dict[str, Any]: ...


def is_backend(obj: object) -> bool:
    """True for an object that declares itself a scoring backend (a ``name`` and ``capabilities``).

    Example:
        >>> is_backend("path/to/model"), is_backend(print)
        (False, False)
    """
    caps = getattr(obj, "capabilities", None)
    return isinstance(caps, (frozenset, set)) and isinstance(getattr(obj, "name", None), str)


def require(backend: object, *capabilities: Capability, strategy: str) -> None:
    """Raise :class:`MissingPrimitiveError` unless ``backend`` offers every one of ``capabilities``.

    A backend may explain a missing capability with ``missing_reason(capability)`` (for
    instance an architecture whose attention cannot be captured); the message includes it.
    """
    if not is_backend(backend):
        raise ValueError(
            f"the {strategy} strategy needs a scoring backend (a model name, a ScoringCore or an object "
            f"with `name` and `capabilities`), got {type(backend).__name__}"
        )
    have = backend.capabilities  # type: ignore[attr-defined]
    for cap in capabilities:
        if cap in have:
            continue
        what = CAPABILITIES.get(cap, cap)
        message = (
            f"the {strategy} strategy needs {what} ({cap!r}), which the backend "
            f"{backend.name!r} does not provide"  # type: ignore[attr-defined]
        )
        reason = getattr(backend, "missing_reason", None)
        detail = reason(cap) if callable(reason) else None
        raise MissingPrimitiveError(f"{message}: {detail}" if detail else message)


def checked_logits_request(
    prompts: Sequence[Sequence[int]],
    token_ids: Sequence[int] | Sequence[Sequence[int]],
    prefix: Sequence[int] | None,
    vocab_size: int,
) -> tuple[list[list[int]], list[list[int]]]:
    """``next_token_logits``'s arguments checked for any backend: (rows, candidate ids per row).

    ``token_ids`` is one list shared by every row or one equal-length list per row; every id must
    be in ``[0, vocab_size)``. No rows gives ``([], [])``.
    """
    rows = [list(map(int, p)) for p in prompts]
    if not rows:
        return [], []
    if any(not r for r in rows):
        if prefix is None:
            raise ValueError("prompts must not be empty token lists")
        # an empty row has no last position of its own (batched, it would read padding)
        raise ValueError("prompts: a prompt continuing a prefix must add at least one token")
    if token_ids and isinstance(token_ids[0], (list, tuple)):
        per_row = [list(map(int, t)) for t in token_ids]  # type: ignore[arg-type]
        if len(per_row) != len(rows) or len({len(t) for t in per_row}) != 1:
            raise ValueError("token_ids per row must give one equal-length list per prompt")
    else:
        shared = [int(t) for t in token_ids]  # type: ignore[arg-type]
        if not shared:
            raise ValueError("token_ids must not be empty")
        per_row = [shared] * len(rows)
    if any(not 0 <= t < vocab_size for ids in per_row for t in ids):
        raise ValueError(f"token_ids must be in [0, {vocab_size})")
    return rows, per_row
