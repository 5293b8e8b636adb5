"""Which floating-point dtype ``dtype="auto"`` picks on CPU.

bfloat16 when the processor computes bf16 dot products natively, float32 otherwise:

* x86 with AMX (``amx_bf16``: Sapphire Rapids and later Xeons) or AVX512-BF16 (``avx512_bf16``:
  Cooper Lake, Zen 4 and later): bfloat16. Measured with transformers 5.24 and torch 2.13, one
  forward pass of Qwen2.5-Coder-0.5B over 2,000 tokens (``logits_to_keep=1``, 2 threads): a
  2-core Xeon with AMX took 19-21 s in float32 and 6-8 s in bfloat16. A 2-core AMD EPYC Zen 4
  (AVX512-BF16, no AMX) shared with other jobs took 27-41 s in float32 and 20-29 s in
  bfloat16 at load average 1-4, 75-82 s against 37-52 s at 6-8; bfloat16 was faster in 4 of 5
  interleaved pairs and in the best times (19.6 s against 27.4 s). One 2,000x896 by 896x4,864
  matrix product there took 0.40 s in float32 and 0.18 s in bfloat16 (best of 8): oneDNN does
  use the AVX512-BF16 dot products.
* Plain AVX512 or AVX2 without those flags: float32. oneDNN emulates bf16 there (converting
  to float32 inside its kernels), which is not expected to beat float32 weights (not measured
  here). That is why ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is not the test: it is
  true on any AVX512 core, native bf16 or not.
* ARM (aarch64 ``bf16``, Apple silicon): float32. Their bf16 matrix paths are not measured
  here, so ``auto`` does not switch them; pass ``dtype="bfloat16"`` to try.
* A torch build without oneDNN (``torch.backends.mkldnn.is_available()`` false): float32,
  whatever the flags, since bf16 matrix products would fall back to generic kernels.

The flags come from torch's own CPU probe (``torch.cpu.get_capabilities()``, the cpuinfo
library torch dispatches on), or from ``/proc/cpuinfo`` where that probe is missing. The
choice for this machine is computed once per process and logged once at INFO.

The environment variable ``RERANK_CPU_DTYPE`` (``float32`` or ``bfloat16``; ``auto`` or unset
means detect) replaces the detection, e.g. to compare both on one machine or to keep a test
suite's numbers machine-independent. An explicit ``dtype=`` still wins over it.

Example:
    >>> choose_cpu_dtype({"avx2", "amx_bf16", "amx_tile"}).dtype
    torch.bfloat16
    >>> choose_cpu_dtype({"avx2", "avx512f"}).dtype
    torch.float32
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["BF16_FLAGS", "ENV_VAR", "CpuDtype", "auto_cpu_dtype", "choose_cpu_dtype", "cpu_flags"]

logger = logging.getLogger(__name__)

#: CPU flags (Linux ``/proc/cpuinfo`` and torch capability names alike) that mean native bf16
#: dot products; the first one present is named in the reason.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")

#: environment variable that replaces the detection: ``float32``, ``bfloat16`` or ``auto``
ENV_VAR = "RERANK_CPU_DTYPE"

_FORCED = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_logged: set[CpuDtype] = set()
_logged_lock = threading.Lock()


@dataclass(frozen=True)
class CpuDtype:
    """The dtype ``auto`` resolves to on CPU and why (``reason`` is for logs)."""

    dtype: torch.dtype
    reason: str


def choose_cpu_dtype(flags: Iterable[str], *, onednn: bool = True) -> CpuDtype:
    """The ``auto`` dtype for a CPU with ``flags`` (a pure function of its arguments).

    Args:
        flags: CPU feature names, as in ``/proc/cpuinfo`` (``amx_bf16``, ``avx512_bf16``, ``bf16``).
        onednn: whether torch was built with oneDNN, which runs the bf16 matrix products.

    Example:
        >>> choose_cpu_dtype({"avx512_bf16"}, onednn=False)
        CpuDtype(dtype=torch.float32, reason='float32: this torch build has no oneDNN for bf16 matrix products')
    """
    present = {str(f).strip().lower() for f in flags}
    native = next((f for f in BF16_FLAGS if f in present), None)
    if native is None:
        if "bf16" in present:
            return CpuDtype(torch.float32, "float32: ARM bf16 is not used by dtype='auto' (unmeasured)")
        return CpuDtype(torch.float32, f"float32: the CPU has none of {', '.join(BF16_FLAGS)}")
    if not onednn:
        return CpuDtype(torch.float32, "float32: this torch build has no oneDNN for bf16 matrix products")
    return CpuDtype(torch.bfloat16, f"bfloat16: the CPU has {native}")


def _torch_flags() -> frozenset[str] | None:
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is None:
        return None
    try:
        caps = get()
    except Exception:  # a probe failure means "unknown", never a crash at model load
        return None
    return frozenset(name for name, value in caps.items() if value is True)


def _proc_flags(path: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """Flags of the first processor in ``path`` (x86 ``flags``, ARM ``Features``); empty if unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags: torch's probe where it answers, else ``/proc/cpuinfo``."""
    found = _torch_flags()
    return found if found is not None else _proc_flags()


@functools.cache
def _detected() -> CpuDtype:
    return choose_cpu_dtype(cpu_flags(), onednn=torch.backends.mkldnn.is_available())


def auto_cpu_dtype() -> CpuDtype:
    """The ``auto`` dtype on this machine's CPU: ``RERANK_CPU_DTYPE`` if set, else detected.

    Detection runs once per process; each distinct choice is logged once at INFO.
    """
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced in ("", "auto"):
        choice = _detected()
    elif forced in _FORCED:
        choice = CpuDtype(_FORCED[forced], f"{forced}: set by {ENV_VAR}")
    else:
        raise ValueError(f"{ENV_VAR} must be 'float32', 'bfloat16' or 'auto', got {forced!r}")
    with _logged_lock:
        first = choice not in _logged
        _logged.add(choice)
    if first:
        logger.info("dtype='auto' on CPU: %s", choice.reason)
    return choice
