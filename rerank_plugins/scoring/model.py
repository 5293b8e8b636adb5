"""Loading a causal LM once per process: hub id, local folder or ``.gguf`` file.

The cache key is (source, device, dtype, attention implementation, trust_remote_code): two
rerankers naming the same model share one instance. Loading is thread-safe (a lock per key),
so concurrent first calls still load once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

__all__ = [
    "LoadedModel",
    "ModelSpec",
    "clear_cache",
    "load_count",
    "load_cross_encoder",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]

logger = logging.getLogger(__name__)

DTypeName = Literal["auto", "float32", "bfloat16", "float16"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_cache: dict[tuple[Any, ...], Any] = {}
_key_locks: dict[tuple[Any, ...], threading.Lock] = {}
_cache_lock = threading.Lock()
_loads = 0


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """CUDA when present, else CPU; an explicit ``device`` wins.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU; an explicit ``dtype`` wins.

    Example:
        >>> resolve_dtype(None, torch.device("cpu"))
        torch.float32
    """
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype}")
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or 'auto', got {dtype!r}")
    return _DTYPES[dtype]


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: a hub id, a local folder, or a folder plus a ``.gguf`` file."""

    source: str
    gguf_file: str | None = None

    @classmethod
    def parse(cls, model: str | os.PathLike[str]) -> ModelSpec:
        """Classify ``model``; paths that look local must exist (clear error, no hub lookup).

        Example:
            >>> ModelSpec.parse("Qwen/Qwen2.5-0.5B-Instruct")
            ModelSpec(source='Qwen/Qwen2.5-0.5B-Instruct', gguf_file=None)
        """
        if not isinstance(model, (str, os.PathLike)) or not str(model).strip():
            raise ValueError(f"model must be a hub id, a local folder or a .gguf file, got {model!r}")
        text = os.path.expanduser(str(model))
        path = Path(text)
        if text.endswith(".gguf"):
            if not path.is_file():
                raise FileNotFoundError(f"model: GGUF file not found: {path}")
            return cls(source=str(path.resolve().parent), gguf_file=path.name)
        if path.exists():
            if not path.is_dir() or not (path / "config.json").is_file():
                raise FileNotFoundError(f"model: {path} is not a transformers model folder (no config.json)")
            return cls(source=str(path.resolve()))
        # Hub ids are "name" or "org/name"; anything else that does not exist is a missing path.
        if text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
            raise FileNotFoundError(f"model: folder not found: {text}")
        return cls(source=text)


@dataclass
class LoadedModel:
    """A model and tokenizer held once per process, with how they were loaded."""

    model: Any
    tokenizer: Any
    spec: ModelSpec
    device: torch.device
    dtype: torch.dtype
    attn_implementation: str
    load_seconds: float
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def name(self) -> str:
        return (self.spec.gguf_file and f"{self.spec.source}/{self.spec.gguf_file}") or self.spec.source


def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            'Loading .gguf files needs the gguf extra: pip install "rerank-plugins[gguf]"'
        ) from exc


def _load(
    spec: ModelSpec,
    device: torch.device,
    dtype: torch.dtype,
    attn_implementation: str | None,
    trust_remote_code: bool,
    tokenizer_source: str | None = None,
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    global _loads
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if spec.gguf_file:
        _require_gguf()
        kwargs["gguf_file"] = spec.gguf_file
    start = time.perf_counter()
    try:
        if tokenizer_source is not None:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, trust_remote_code=trust_remote_code)
        else:
            tokenizer = AutoTokenizer.from_pretrained(spec.source, **kwargs)
        model: Any = AutoModelForCausalLM.from_pretrained(
            spec.source, dtype=dtype, attn_implementation=attn_implementation, **kwargs
        )
    except OSError as exc:
        raise OSError(
            f"could not load model {spec.source!r}"
            + (f" (gguf file {spec.gguf_file})" if spec.gguf_file else "")
            + f": {exc}. Give a local folder or .gguf file when the Hugging Face hub is unreachable."
        ) from exc
    if spec.gguf_file:
        # GGUF weights are dequantised on load; drop the quantiser so the model is a plain module.
        model.hf_quantizer = None
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.eos_token_id is None:
        # Some GGUF files carry no special-token map: recover EOS from the model config.
        eos = getattr(model.generation_config, "eos_token_id", None) or getattr(model.config, "eos_token_id", None)
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        if eos is not None:
            tokenizer.eos_token = tokenizer.convert_ids_to_tokens(int(eos))
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        logger.warning(
            "%s has no chat template; prompts are plain text. Pass tokenizer=<folder or hub id> to use one.",
            spec.source if not spec.gguf_file else spec.gguf_file,
        )
    elapsed = time.perf_counter() - start
    _loads += 1
    impl = getattr(model.config, "_attn_implementation", None) or str(attn_implementation)
    logger.info("loaded %s on %s (%s, attention %s) in %.1fs", spec.source, device, dtype, impl, elapsed)
    return LoadedModel(model, tokenizer, spec, device, dtype, impl, elapsed)


def load_model(
    model: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: DTypeName | torch.dtype | None = None,
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = None,
    trust_remote_code: bool = False,
    gpu_memory_fraction: float | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load (or return the already loaded) causal LM and tokenizer.

    Args:
        model: a hub id, a local folder holding config.json, or a ``.gguf`` file.
        device: ``"auto"``/None (CUDA if present, else CPU), ``"cpu"``, ``"cuda:0"``...
        dtype: None/"auto" (bf16 on CUDA, fp32 on CPU) or an explicit dtype.
        attn_implementation: transformers' attention kernel; None lets transformers choose (SDPA).
        trust_remote_code: run code shipped with the checkpoint; off unless asked.
        gpu_memory_fraction: cap this process's CUDA memory (0-1] so the reranker can share
            a card with the generator LLM (``torch.cuda.set_per_process_memory_fraction``).
        tokenizer: load the tokenizer from this hub id or folder instead (e.g. for a ``.gguf``
            file whose metadata lacks the chat template).

    Example:
        >>> lm = load_model("path/to/SmolLM2-135M-Instruct")  # doctest: +SKIP
    """
    spec = ModelSpec.parse(model)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if attn_implementation not in (None, "sdpa", "eager", "flash_attention_2"):
        raise ValueError(
            f"attn_implementation must be 'sdpa', 'eager', 'flash_attention_2' or None, got {attn_implementation!r}"
        )
    if not isinstance(trust_remote_code, bool):
        raise ValueError("trust_remote_code must be a bool")
    if gpu_memory_fraction is not None:
        number = isinstance(gpu_memory_fraction, (int, float)) and not isinstance(gpu_memory_fraction, bool)
        if not number or not 0 < gpu_memory_fraction <= 1:
            raise ValueError(f"gpu_memory_fraction must be a number in (0, 1], got {gpu_memory_fraction!r}")
        if dev.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(gpu_memory_fraction, dev)
    tok_source = None
    if tokenizer is not None:
        tok_source = os.path.expanduser(str(tokenizer))
        if tok_source.startswith((".", "/", "~")) and not Path(tok_source).is_dir():
            raise FileNotFoundError(f"tokenizer: folder not found: {tok_source}")
    key = (spec, str(dev), dt, attn_implementation, trust_remote_code, tok_source)
    loaded: LoadedModel = _load_once(
        key, lambda: _load(spec, dev, dt, attn_implementation, trust_remote_code, tok_source)
    )
    return loaded


def _load_once(key: tuple[Any, ...], load: Callable[[], Any]) -> Any:
    """Return the cached object for ``key``, calling ``load`` at most once per key per process.

    A lock per key lets different models load in parallel while concurrent first calls for the
    same key wait for one load instead of loading twice.
    """
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _cache_lock:
            if key in _cache:
                return _cache[key]
        obj = load()
        with _cache_lock:
            _cache[key] = obj
    return obj


def load_count() -> int:
    """How many models this process has loaded from disk (tests use it to prove sharing)."""
    return _loads


def clear_cache() -> None:
    """Forget every loaded model (their memory is freed once no reranker holds them)."""
    with _cache_lock:
        _cache.clear()
        _key_locks.clear()


def load_cross_encoder(
    model: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    max_length: int | None = None,
    trust_remote_code: bool = False,
) -> Any:
    """Load (once per process and settings) a sentence-transformers ``CrossEncoder``.

    Example:
        >>> ce = load_cross_encoder("cross-encoder/ms-marco-MiniLM-L6-v2")  # doctest: +SKIP
    """
    from sentence_transformers import CrossEncoder

    text = os.path.expanduser(str(model))
    if text.startswith((".", "/", "~")) and not Path(text).is_dir():
        raise FileNotFoundError(f"model: cross-encoder folder not found: {text}")
    dev = resolve_device(device)
    key = ("cross-encoder", text, str(dev), max_length, trust_remote_code)

    def load() -> Any:
        global _loads
        start = time.perf_counter()
        try:
            ce = CrossEncoder(text, device=str(dev), max_length=max_length, trust_remote_code=trust_remote_code)
        except OSError as exc:
            raise OSError(
                f"could not load cross-encoder {text!r}: {exc}. "
                "Give a local folder when the Hugging Face hub is unreachable."
            ) from exc
        _loads += 1
        logger.info("loaded cross-encoder %s on %s in %.1fs", text, dev, time.perf_counter() - start)
        return ce

    return _load_once(key, load)
