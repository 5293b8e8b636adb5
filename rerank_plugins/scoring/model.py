"""Loading a causal LM once per process: hub id, local folder or ``.gguf`` file.

The cache key is (source, device, dtype, attention implementation, trust_remote_code): two
rerankers naming the same model share one instance. Loading is thread-safe (a lock per key),
so concurrent first calls still load once.

A local folder or ``.gguf`` file that fails to load (truncated weights, a config.json without
``model_type``, an empty or foreign file) raises :class:`ModelLoadError` naming the file and the
cause; the "hub unreachable" hint is given only for hub ids.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from rerank_plugins.scoring.cpu import auto_cpu_dtype

__all__ = [
    "LoadedModel",
    "ModelLoadError",
    "ModelSpec",
    "clear_cache",
    "keep_head_float32",
    "load_count",
    "load_cross_encoder",
    "load_failure",
    "load_model",
    "loading",
    "resolve_device",
    "resolve_dtype",
    "weights_dtype",
]

logger = logging.getLogger(__name__)

DTypeName = Literal["auto", "float32", "bfloat16", "float16"]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_cache: dict[tuple[Any, ...], Any] = {}
_key_locks: dict[tuple[Any, ...], threading.Lock] = {}
_cache_lock = threading.Lock()
_loads = 0


class ModelLoadError(ValueError, OSError):
    """A local model folder or ``.gguf`` file exists but cannot be loaded; the message names the
    file and the cause.

    A ``ValueError`` (bad input) and an ``OSError`` (what transformers raises for unreadable model
    files), so handlers written for either still catch it.
    """


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a real bool, else raise ``ValueError`` naming ``name``.

    Strings are refused: ``"false"`` is truthy, and for ``trust_remote_code`` a truthy mistake
    would run a checkpoint's own Python code.

    Example:
        >>> check_bool("calibrate", True)
        True
    """
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool (True or False), got {value!r}")
    return value


def _diagnose(path: Path) -> str | None:
    """What is wrong with a local model folder or ``.gguf`` file, when a cheap check can tell."""
    if path.is_file():
        size = path.stat().st_size
        if size == 0:
            return f"{path} is empty"
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                return f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)"
        return None
    config = path / "config.json"
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{config} is not a readable JSON file ({exc})"
    if not isinstance(cfg, dict):
        return f"{config} is not a JSON object"
    if "model_type" not in cfg:
        return f"{config} has no 'model_type' key, so transformers cannot tell the architecture"
    from safetensors import safe_open

    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt"):
                pass
        except Exception as exc:  # safetensors raises its own SafetensorError for bad headers
            return f"{weights} is truncated or corrupt ({exc})"
    return None


def load_failure(what: str, source: str, exc: BaseException) -> OSError | None:
    """The error to raise when loading ``source`` (a hub id, local folder or .gguf file) failed.

    A local path gives :class:`ModelLoadError` naming the file and the cause; a hub id whose
    files could not be fetched (``OSError``) gives an ``OSError`` with the hint for an
    unreachable hub; ``None`` means "re-raise ``exc`` as it is".
    """
    path = Path(source)
    if not path.exists():
        if not isinstance(exc, OSError):
            return None
        return OSError(
            f"could not load {what} {source!r}: {exc}. "
            "Give a local folder or .gguf file when the Hugging Face hub is unreachable."
        )
    found = _diagnose(path)
    kind = type(exc)
    cause = f"{kind.__name__ if kind.__module__ == 'builtins' else f'{kind.__module__}.{kind.__name__}'}: {exc}"
    if found is not None:
        return ModelLoadError(f"could not load {what} from {path}: {found} [{cause}]")
    if path.is_file():
        return ModelLoadError(f"could not load {what} from {path}: {cause} (the file may be truncated or corrupt)")
    return ModelLoadError(f"could not load {what} from {path}: {cause}")


@contextlib.contextmanager
def loading(what: str, source: str) -> Iterator[None]:
    """Raise :func:`load_failure`'s error for a failure inside the block.

    Missing packages and out-of-memory errors pass through unchanged: they are not a broken file.
    """
    try:
        yield
    except (ImportError, MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as exc:
        error = load_failure(what, source, exc)
        if error is None:
            raise
        raise error from exc


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
    """The dtype to load weights in; an explicit ``dtype`` wins.

    ``None``/``"auto"``: bfloat16 on CUDA; on CPU, bfloat16 when the processor computes bf16
    natively (AMX or AVX512-BF16) and float32 otherwise (:func:`~rerank_plugins.scoring.cpu.auto_cpu_dtype`,
    logged once); float32 on any other device.

    Example:
        >>> resolve_dtype("float32", torch.device("cpu"))
        torch.float32
    """
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16
        if device.type == "cpu":
            return auto_cpu_dtype().dtype
        return torch.float32
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
    # The file to name in errors: the .gguf file itself, else the folder or hub id.
    source = str(Path(spec.source) / spec.gguf_file) if spec.gguf_file else spec.source
    if tokenizer_source is not None:
        with loading("tokenizer", tokenizer_source):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, trust_remote_code=trust_remote_code)
    else:
        with loading("model", source):
            tokenizer = AutoTokenizer.from_pretrained(spec.source, **kwargs)
    with loading("model", source):
        model: Any = AutoModelForCausalLM.from_pretrained(
            spec.source, dtype=dtype, attn_implementation=attn_implementation, **kwargs
        )
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
        dtype: None/"auto" (bf16 on CUDA; on CPU bf16 with AMX or AVX512-BF16, else fp32; see
            :func:`resolve_dtype`) or an explicit dtype.
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
    check_bool("trust_remote_code", trust_remote_code)
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
    dtype: DTypeName | torch.dtype | None = None,
    max_length: int | None = None,
    trust_remote_code: bool = False,
) -> Any:
    """Load (once per process and settings) a sentence-transformers ``CrossEncoder``.

    ``dtype`` resolves as for the LLM (:func:`resolve_dtype`). Below float32 the classification
    head still computes and returns float32 (:func:`keep_head_float32`), so scores are not
    rounded to bf16's 8 bits of mantissa, which would tie close documents.

    Example:
        >>> ce = load_cross_encoder("cross-encoder/ms-marco-MiniLM-L6-v2")  # doctest: +SKIP
    """
    from sentence_transformers import CrossEncoder

    check_bool("trust_remote_code", trust_remote_code)
    text = os.path.expanduser(str(model))
    if text.startswith((".", "/", "~")) and not Path(text).is_dir():
        raise FileNotFoundError(f"model: cross-encoder folder not found: {text}")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    key = ("cross-encoder", text, str(dev), dt, max_length, trust_remote_code)

    def load() -> Any:
        global _loads
        start = time.perf_counter()
        # sentence-transformers before 4 has no `model_kwargs` on CrossEncoder: load, then cast
        takes_kwargs = "model_kwargs" in inspect.signature(CrossEncoder.__init__).parameters
        with loading("cross-encoder", text):
            ce = CrossEncoder(
                text,
                device=str(dev),
                max_length=max_length,
                trust_remote_code=trust_remote_code,
                **({"model_kwargs": {"dtype": dt}} if takes_kwargs else {}),
            )
            if not takes_kwargs and dt != torch.float32:
                ce.model.to(dt)
        if dt != torch.float32:
            keep_head_float32(ce)
        # Query and document text is data: "[SEP]" inside it must not become the separator token.
        ce.tokenizer.split_special_tokens = True
        _loads += 1
        logger.info("loaded cross-encoder %s on %s (%s) in %.1fs", text, dev, dt, time.perf_counter() - start)
        return ce

    return _load_once(key, load)


def weights_dtype(module: Any) -> torch.dtype:
    """The dtype of a model's first parameter (older sentence-transformers objects have no ``.dtype``;
    their ``CrossEncoder`` is not a torch module but holds one as ``.model``)."""
    torch_module = module if hasattr(module, "parameters") else module.model
    return next(iter(torch_module.parameters())).dtype


def keep_head_float32(ce: Any) -> str | None:
    """Make a ``CrossEncoder``'s output layer compute in float32; return its module path.

    The output layer is the last ``nn.Linear`` with ``num_labels`` outputs (BERT's
    ``classifier``, XLM-R's ``classifier.out_proj``, Qwen's ``score``). Its weights keep their
    dtype; sentence-transformers' ``set_keep_in_fp32_modules`` casts them per call. ``None``
    (logged) when no such layer is found or this sentence-transformers lacks the method.
    """
    setter = getattr(ce, "set_keep_in_fp32_modules", None)
    if setter is None:  # sentence-transformers before 6
        logger.info("cross-encoder scores stay in %s: no float32 output layer could be set", weights_dtype(ce))
        return None
    labels = getattr(getattr(ce, "config", None), "num_labels", None)
    heads = [
        name
        for name, module in ce.named_modules()
        if type(module) is torch.nn.Linear and (labels is None or module.out_features == labels)
    ]
    if not heads:
        logger.info("cross-encoder scores stay in %s: no float32 output layer could be set", weights_dtype(ce))
        return None
    setter([heads[-1]])
    return heads[-1]


@functools.cache
def _cache_keyword(module_type: Any) -> str:
    # transformers 5.24 renamed the forward's `past_key_values` to `cache` (the old name warns
    # and goes away in 5.40); ask the signature which one this model takes.
    return "cache" if "cache" in inspect.signature(module_type.forward).parameters else "past_key_values"


def kv_cache_kwargs(module: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` for ``module``'s forward, under the keyword its transformers version takes."""
    module_type: Any = type(module)
    return {_cache_keyword(module_type): cache}


def returned_cache(output: Any) -> Any:
    """The KV cache a forward pass returned (``cache``, or ``past_key_values`` before transformers 5.24)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
