"""The shared scoring core: prompt building and the model primitives strategies use.

:class:`ScoringCore` implements every LLM primitive of the scoring protocol
(:mod:`rerank_plugins.scoring.protocol`) over a transformers model in this process:

    * :meth:`ScoringCore.next_token_logits`: for a batch of prompts, the logits of chosen next
      tokens, computed from the last hidden state of each row projected onto only those rows
      of the output embedding (never full-vocabulary logits for every position), in float32
      whatever the weights' dtype.
    * :meth:`ScoringCore.generate`: short greedy generation.
    * :meth:`ScoringCore.suffix_attention`: attention of query rows onto every position
      (:mod:`rerank_plugins.scoring.attention`), for the architectures it supports.
    * :meth:`ScoringCore.encode_chat` and :meth:`ScoringCore.encode_documents`: chat-template
      prompts and documents cut to a token budget (never the instruction or the assistant
      prefix); every cut is counted and logged.

Concurrent callers (threads, or async tasks through ``asyncio.to_thread``) are micro-batched:
requests that arrive while a forward pass runs are merged into the next one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rerank_plugins.scoring import attention as _attention
from rerank_plugins.scoring.model import LoadedModel, check_bool, kv_cache_kwargs, load_model, returned_cache
from rerank_plugins.scoring.prompts import ChatPrompts, Document, EncodedPrompt
from rerank_plugins.scoring.protocol import checked_logits_request, is_backend
from rerank_plugins.scoring.served.backend import is_served_name
from rerank_plugins.scoring.stats import CoreStats

__all__ = ["CoreStats", "Document", "EncodedPrompt", "ScoringCore", "clear_cores", "get_core"]

logger = logging.getLogger(__name__)

#: config fields whose values identify an architecture (hashed into ``model_identity()``)
_IDENTITY_FIELDS = (
    "model_type", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size",
    "intermediate_size", "vocab_size", "max_position_embeddings",
)


@dataclass
class _Request:
    prompts: list[list[int]]
    token_ids: list[list[int]]
    prefix: tuple[int, ...] | None
    result: torch.Tensor | list[torch.Tensor] | None = None
    error: BaseException | None = None
    done: bool = False


class ScoringCore(ChatPrompts):
    """Model primitives over one loaded causal LM; build with :func:`get_core`.

    Args:
        loaded: the process-wide :class:`LoadedModel`.
        max_batch_tokens: padded tokens per forward pass (rows x longest row); bounds
            activation memory, so lower it when sharing a GPU.

    Example:
        >>> core = get_core("path/to/SmolLM2-135M-Instruct")  # doctest: +SKIP
        >>> ids = core.encode_chat(["Is the sky blue? Answer Yes or No."]).input_ids  # doctest: +SKIP
        >>> core.next_token_logits([ids], core.token_ids(["Yes", "No"]))  # doctest: +SKIP
    """

    def __init__(self, loaded: LoadedModel, *, max_batch_tokens: int = 16384) -> None:
        if max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be positive")
        self.loaded = loaded
        self.max_batch_tokens = max_batch_tokens
        self.stats = CoreStats()
        self._pending: list[_Request] = []
        self._pending_lock = threading.Lock()
        self._identity: dict[str, Any] | None = None
        cfg = loaded.model.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self.max_length: int = int(getattr(text_cfg, "max_position_embeddings", 0) or 4096)
        self._softcap = getattr(text_cfg, "final_logit_softcapping", None)
        # the prompt half (tokenization, chat templates, document budgets) is the tokenizer's work
        super().__init__(loaded.tokenizer, self.stats)
        tok = loaded.tokenizer
        # Padding is always masked (and right padding never attended), so any id works as a fallback.
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0))

    # ------------------------------------------------------------------ properties
    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    @property
    def dtype(self) -> torch.dtype:
        return self.loaded.dtype

    @property
    def name(self) -> str:
        return self.loaded.name

    def __repr__(self) -> str:
        return f"ScoringCore({self.name!r}, device={self.device}, dtype={self.dtype})"

    @property
    def capabilities(self) -> frozenset[str]:
        """The protocol's primitives this core offers (attention only for supported architectures)."""
        caps = {"prompts", "logits", "generate", "forward"}
        if self.missing_reason("attention") is None:
            caps.add("attention")
        return frozenset(caps)

    def missing_reason(self, capability: str) -> str | None:
        """Why ``capability`` is missing, or ``None`` when this core has it."""
        if capability == "attention":
            try:
                _attention.check_supported(self.model)
            except ValueError as exc:
                return f"{exc}; pick a model of a supported type"
            return None
        if capability in ("prompts", "logits", "generate", "forward"):
            return None
        return f"a causal LM core has no {capability!r} primitive"

    def describe(self) -> dict[str, Any]:
        """The backend's settings, for reports."""
        return {"backend": "transformers", "model": self.name, "device": str(self.device),
                "dtype": str(self.dtype).removeprefix("torch.")}

    def _check_length(self, n: int) -> None:
        if n > self.max_length:
            raise ValueError(
                f"prompt of {n} tokens exceeds the model's context of {self.max_length}; "
                "lower the per-document token budget or the window size"
            )

    # ------------------------------------------------------------------ primitives
    def next_token_logits(
        self,
        prompts: Sequence[Sequence[int]],
        token_ids: Sequence[int] | Sequence[Sequence[int]],
        *,
        prefix: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Logits of ``token_ids`` as the next token after each prompt, shape ``[B, K]``.

        Args:
            prompts: token ids per row (continuations of ``prefix`` when given).
            token_ids: the K candidate next tokens, shared by all rows, or one list per row
                (all of length K).
            prefix: ids shared by every row; its KV cache is computed once and reused.

        Returns:
            float32 CPU tensor ``[len(prompts), K]``.
        """
        vocab = self.model.get_output_embeddings().weight.shape[0]
        rows, per_row = checked_logits_request(prompts, token_ids, prefix, vocab)
        if not rows:
            return torch.empty(0, 0)
        pre = tuple(map(int, prefix)) if prefix is not None else None
        for r in rows:
            self._check_length(len(r) + (len(pre) if pre else 0))
        request = _Request(rows, per_row, pre)
        return self._submit(request)

    def _submit(self, request: _Request) -> torch.Tensor:
        # Micro-batching: whoever holds the model lock serves every request queued so far.
        with self._pending_lock:
            self._pending.append(request)
        with self.loaded.lock:
            if not request.done:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._serve(batch)
        if request.error is not None:
            raise request.error
        assert isinstance(request.result, torch.Tensor)
        return request.result

    def _serve(self, batch: list[_Request]) -> None:
        groups: dict[tuple[tuple[int, ...] | None, int], list[_Request]] = {}
        for req in batch:
            groups.setdefault((req.prefix, len(req.token_ids[0])), []).append(req)
        for (prefix, _k), reqs in groups.items():
            rows = [r for req in reqs for r in req.prompts]
            ids = [t for req in reqs for t in req.token_ids]
            try:
                out = self._logits_rows(rows, ids, prefix)
            except BaseException as exc:
                if len(reqs) > 1 and isinstance(exc, Exception):
                    # one request's rows may be the cause: serve each alone, so only it fails
                    for req in reqs:
                        self._serve([req])
                else:
                    for req in reqs:
                        req.error, req.done = exc, True
                continue
            start = 0
            for req in reqs:
                req.result = out[start : start + len(req.prompts)]
                start += len(req.prompts)
                req.done = True

    def _chunks(self, lengths: list[int], extra: int = 0) -> list[list[int]]:
        """Row indices grouped so rows x (longest + extra) stays under max_batch_tokens."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        chunks: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            longest = max([lengths[j] for j in cur] + [lengths[i]]) + extra
            if cur and longest * (len(cur) + 1) > self.max_batch_tokens:
                chunks.append(cur)
                cur = []
            cur.append(i)
        if cur:
            chunks.append(cur)
        return chunks

    @torch.inference_mode()
    def _logits_rows(
        self, rows: list[list[int]], token_ids: list[list[int]], prefix: tuple[int, ...] | None
    ) -> torch.Tensor:
        model = self.model
        base = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
        head = model.get_output_embeddings()
        pad = self.pad_id
        out = torch.empty(len(rows), len(token_ids[0]), dtype=torch.float32)
        prefix_cache = None
        p_len = len(prefix) if prefix else 0
        if prefix:
            pre_ids = torch.tensor([prefix], device=self.device)
            prefix_cache = returned_cache(base(input_ids=pre_ids, use_cache=True))
            self.stats.add(forward_passes=1, prompt_tokens=p_len)
        for chunk in self._chunks([len(r) for r in rows], extra=p_len):
            longest = max(len(rows[i]) for i in chunk)
            if longest == 0:  # every row is exactly the prefix: score the prefix's last position
                raise ValueError("a prompt continuing a prefix must add at least one token")
            # Right padding plus each row's own last index: positions stay exact, no position_ids needed.
            ids = torch.full((len(chunk), longest), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), longest), dtype=torch.long)
            for j, i in enumerate(chunk):
                ids[j, : len(rows[i])] = torch.tensor(rows[i])
                mask[j, : len(rows[i])] = 1
            kwargs: dict[str, Any] = {}
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(chunk))
                kwargs.update(kv_cache_kwargs(base, cache))
                mask = torch.cat([torch.ones(len(chunk), p_len, dtype=torch.long), mask], dim=1)
            hidden = base(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                use_cache=prefix_cache is not None,
                **kwargs,
            ).last_hidden_state
            last = torch.tensor([len(rows[i]) - 1 for i in chunk], device=self.device)
            h = hidden[torch.arange(len(chunk), device=self.device), last]  # [b, H]
            wanted = torch.tensor([token_ids[i] for i in chunk], device=self.device)  # [b, K]
            w = head.weight[wanted]  # [b, K, H]: only the rows we need
            # float32 whatever the weights' dtype: a bf16 logit is rounded to 8 bits of mantissa
            # (steps of 0.0625 near 10), as coarse as the Yes/No gaps being compared.
            logits = torch.einsum("bh,bkh->bk", h.float(), w.float())
            if getattr(head, "bias", None) is not None:
                logits = logits + head.bias[wanted].float()
            if self._softcap:
                logits = torch.tanh(logits / self._softcap) * self._softcap
            out[torch.tensor(chunk)] = logits.float().cpu()
            self.stats.add(forward_passes=1, prompt_tokens=int(sum(len(rows[i]) for i in chunk)))
        return out

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64) -> list[str]:
        """Greedy continuations (decoded, special tokens skipped) of each prompt."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        rows = [list(map(int, p)) for p in prompts]
        if not rows:
            return []
        if any(not r for r in rows):
            raise ValueError("prompts must not be empty token lists")
        for r in rows:
            self._check_length(len(r) + max_new_tokens)
        pad = self.pad_id
        texts: list[str] = [""] * len(rows)
        with self.loaded.lock:
            for chunk in self._chunks([len(r) for r in rows], extra=max_new_tokens):
                longest = max(len(rows[i]) for i in chunk)
                # Left padding for generation: every row's next token sits at the same column.
                ids = torch.full((len(chunk), longest), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), longest), dtype=torch.long)
                for j, i in enumerate(chunk):
                    ids[j, longest - len(rows[i]) :] = torch.tensor(rows[i])
                    mask[j, longest - len(rows[i]) :] = 1
                gen = self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad,
                )
                new = gen[:, longest:]
                n_new = int((new != pad).sum())
                for j, i in enumerate(chunk):
                    texts[i] = self.tokenizer.decode(new[j], skip_special_tokens=True)
                self.stats.add(
                    forward_passes=int(new.shape[1]),
                    prompt_tokens=int(mask.sum()),
                    generated_tokens=n_new,
                )
        return texts

    @torch.inference_mode()
    def suffix_attention(
        self,
        prefix: Sequence[int],
        suffixes: Sequence[Sequence[int]],
        *,
        layers: Sequence[int] | range | None = None,
        per_layer: bool = False,
        heads: Sequence[tuple[int, int]] | None = None,
        per_head: bool = False,
    ) -> list[torch.Tensor]:
        """Attention of every suffix token onto every position, summed over heads and ``layers``.

        The prefix runs once (its KV cache kept); each suffix runs on that cache, so a second
        suffix (a content-free query) costs only its own tokens.

        Args:
            prefix: token ids shared by all suffixes (at least one token).
            suffixes: token ids continuing the prefix, one list per variant (e.g. the real
                and the content-free query).
            layers: decoder layer indices to sum over (``None``: all; negatives count from
                the end). Layers after the last one named are not run at all.
            per_layer: keep one slice per layer instead of their sum.
            heads: ``(layer, head)`` pairs to sum over instead of every head of ``layers``
                (then ``layers`` must be ``None``); layers above the highest one named are
                not run.
            per_head: keep one slice per (layer, head) instead of their sum.

        Returns:
            One float32 CPU tensor per suffix, shape ``[len(suffix), len(prefix) + len(suffix)]``:
            row ``i`` is the attention of suffix token ``i`` (summed over the chosen heads and
            layers) onto every position; each row sums to the number of (layer, head) pairs
            summed. With ``per_layer``, shape ``[len(layers), len(suffix), len(prefix) + len(suffix)]``;
            with ``per_head``, ``[pairs, len(suffix), ...]``: the pairs of ``heads`` in their
            order, or every head of ``layers``, layer-major (``.view(len(layers), heads, ...)``).

        Example:
            >>> real, na = core.suffix_attention(prefix_ids, [query_ids, na_ids])  # doctest: +SKIP
            >>> two = core.suffix_attention(prefix_ids, [query_ids], heads=[(12, 3)], per_head=True)  # doctest: +SKIP
        """
        _attention.check_supported(self.model)
        pre = [int(t) for t in prefix]
        rows = [[int(t) for t in s] for s in suffixes]
        if not pre:
            raise ValueError("prefix must hold at least one token")
        if not rows or any(not r for r in rows):
            raise ValueError("suffixes must be a non-empty list of non-empty token lists")
        for r in rows:
            self._check_length(len(pre) + len(r))
        # checked before the model lock is taken: a bad choice costs no forward pass
        n_layers, n_heads = self.attention_layout()
        _attention.plan_capture(n_layers, n_heads, layers=layers, per_layer=per_layer, heads=heads, per_head=per_head)
        with self.loaded.lock:
            out = _attention.capture_suffix_attention(
                self.model, pre, rows, layers=layers, per_layer=per_layer, device=self.device,
                heads=heads, per_head=per_head,
            )
        self.stats.add(forward_passes=1 + len(rows), prompt_tokens=len(pre) + sum(map(len, rows)))
        return out

    @torch.inference_mode()
    def model_identity(self) -> dict[str, Any]:
        """What identifies the loaded weights, for matching head profiles to models.

        ``name`` (the config's recorded name, else the load name; informational), the
        architecture (``model_type``, ``layers``, ``heads``), ``config_sha256`` (a hash of the
        architecture's sizes) and ``fingerprint``: the L2 norms of 16 fixed rows of the input
        embedding (5 significant digits). Fine-tunes of one architecture share the hash but not
        the fingerprint; the same weights loaded in another dtype keep it within 1%.
        """
        if self._identity is None:
            cfg = self.model.config
            text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
            sizes = {k: getattr(text_cfg, k, None) for k in _IDENTITY_FIELDS}
            digest = hashlib.sha256(json.dumps(sizes, sort_keys=True).encode()).hexdigest()[:16]
            weight = self.model.get_input_embeddings().weight
            rows = [(k * weight.shape[0]) // 17 for k in range(1, 17)]
            norms = weight[rows].float().norm(dim=-1).cpu().tolist()
            name = getattr(text_cfg, "_model_name_or_path", None) or getattr(cfg, "_model_name_or_path", None)
            self._identity = {
                "name": str(name or self.name),
                "model_type": sizes["model_type"],
                "layers": int(text_cfg.num_hidden_layers),
                "heads": int(text_cfg.num_attention_heads),
                "config_sha256": digest,
                "fingerprint": [float(f"{x:.5g}") for x in norms],
            }
        return dict(self._identity)

    def attention_layout(self) -> tuple[int, int]:
        """``(decoder layers, attention heads per layer)`` of the model."""
        cfg = self.model.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        return int(text_cfg.num_hidden_layers), int(text_cfg.num_attention_heads)

    @torch.inference_mode()
    def forward(self, input_ids: Sequence[int]) -> None:
        """One plain forward pass (last-position logits only): the benchmarks' bare reference."""
        ids = list(map(int, input_ids))
        if not ids:
            raise ValueError("input_ids must not be empty")
        self._check_length(len(ids))
        with self.loaded.lock:
            self.model(input_ids=torch.tensor([ids], device=self.device), logits_to_keep=1)
        self.stats.add(forward_passes=1, prompt_tokens=len(ids))


_cores: dict[tuple[int, int], ScoringCore] = {}
_cores_lock = threading.Lock()


def clear_cores() -> None:
    """Forget every core and loaded model (for tests and long-lived apps swapping models)."""
    from rerank_plugins.scoring.model import clear_cache
    from rerank_plugins.scoring.served import clear_served

    with _cores_lock:
        _cores.clear()
    clear_cache()
    clear_served()


def get_core(
    model: str | os.PathLike[str] | ScoringCore,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    attn_implementation: Any = None,
    trust_remote_code: bool = False,
    gpu_memory_fraction: float | None = None,
    max_batch_tokens: int = 16384,
    tokenizer: str | os.PathLike[str] | None = None,
) -> ScoringCore:
    """The process-wide :class:`ScoringCore` for a model (loaded once, then shared); a backend passes through.

    A URL (``http://host:port/v1#<tokenizer>``) gives the shared
    :class:`~rerank_plugins.scoring.served.ServedModel` for that server instead.

    Example:
        >>> core = get_core("path/to/SmolLM2-135M-Instruct")  # doctest: +SKIP
        >>> core is get_core("path/to/SmolLM2-135M-Instruct")  # doctest: +SKIP
        True
    """
    check_bool("trust_remote_code", trust_remote_code)  # also for a ready core: a string here is a caller bug
    if isinstance(model, ScoringCore) or is_backend(model):
        return model  # type: ignore[return-value]  # a ready backend of any kind is used as it is
    if isinstance(model, str) and is_served_name(model):
        # A URL names a model served over HTTP: the shared served backend for it (scoring.served).
        local = {"device": device, "dtype": dtype, "attn_implementation": attn_implementation,
                 "gpu_memory_fraction": gpu_memory_fraction}
        given = sorted(k for k, v in local.items() if v is not None)
        if given:
            raise ValueError(
                f"{', '.join(given)} apply to a model loaded in this process, not to the served model {model!r}"
            )
        from rerank_plugins.scoring.served import get_served

        return get_served(model, tokenizer=tokenizer, trust_remote_code=trust_remote_code)  # type: ignore[return-value]
    loaded = load_model(
        model,
        device=device,
        dtype=dtype,  # type: ignore[arg-type]
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        gpu_memory_fraction=gpu_memory_fraction,
        tokenizer=tokenizer,
    )
    key = (id(loaded), max_batch_tokens)
    with _cores_lock:
        if key not in _cores:
            _cores[key] = ScoringCore(loaded, max_batch_tokens=max_batch_tokens)
        return _cores[key]
