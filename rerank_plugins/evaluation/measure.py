"""Measuring helpers shared by every benchmark: the machine, load, memory, percentiles, files.

Each benchmark records :func:`machine` in its results file and prints :func:`machine_summary`
under its table, so a figure always names the machine it was measured on. A run resumed on a
machine of another kind (other CPU model, core count, bf16/AMX support, GPU, torch or
transformers version) keeps the earlier records and says so: :func:`machine_change` words the
difference, and each benchmark stores it beside the records and prints it under the table.

Example:
    >>> from rerank_plugins.evaluation.measure import markdown_table, percentile
    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    >>> print(markdown_table(["method", "s/q"], [["identity", "0.01"]]))
    | method | s/q |
    |---|---:|
    | identity | 0.01 |
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "BF16_FLAGS",
    "RssSampler",
    "cuda_peak_bytes",
    "cuda_reset_peak",
    "jsonable",
    "load_1min",
    "load_json",
    "machine",
    "machine_change",
    "machine_footer",
    "machine_summary",
    "markdown_table",
    "method_records",
    "now",
    "percentile",
    "resume_machine",
    "save_json",
]

logger = logging.getLogger(__name__)

#: CPU flags (``/proc/cpuinfo``) that decide whether bf16 matrix work is native: AVX-512 BF16
#: instructions and the AMX tile unit. fp32 timings of two CPUs that differ here are comparable;
#: bf16 timings are not.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")

# What makes two machines "of one kind" for the figures the benchmarks report.
_KIND_KEYS = ("cpu", "cpus", "cpu_flags", "cpu_capability", "gpu", "torch", "transformers")


def now() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-12-01T17:03:09Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- the machine


def _cpuinfo(path: str | os.PathLike[str]) -> tuple[str | None, set[str] | None]:
    """(CPU model name, flags) from a ``/proc/cpuinfo``-style file; (None, None) where unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, None
    model: str | None = None
    flags: set[str] | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip() or None
        elif key in ("flags", "Features") and flags is None:  # x86 / ARM spelling
            flags = set(value.split())
    return model, flags


def _ram_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def machine(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo", **extra: Any) -> dict[str, Any]:
    """What a benchmark runs on: CPU model and bf16/AMX flags, cores, RAM, GPU, torch and transformers.

    Keys: ``platform``, ``python``, ``cpu`` (model name), ``cpu_flags`` (each of
    :data:`BF16_FLAGS` -> present or not; None where the flags cannot be read),
    ``cpu_capability`` (the kernels torch picked, e.g. ``AVX2``, ``AVX512``), ``cpus``,
    ``ram_bytes``, ``torch``, ``transformers``, ``threads`` (torch's intra-op threads),
    ``gpu`` (name of CUDA device 0, or None) and ``gpus`` (count); then ``extra`` as given
    (e.g. ``faiss=faiss.__version__``).

    Example:
        >>> info = machine()
        >>> sorted(info["cpu_flags"] or {}) == sorted(BF16_FLAGS) or info["cpu_flags"] is None
        True
    """
    model, flags = _cpuinfo(cpuinfo)
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": model or platform.processor() or None,
        "cpu_flags": None if flags is None else {f: f in flags for f in BF16_FLAGS},
        "cpu_capability": None,
        "cpus": os.cpu_count(),
        "ram_bytes": _ram_bytes(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "threads": None,
        "gpu": None,
        "gpus": 0,
    }
    import torch

    info["threads"] = torch.get_num_threads()
    get_capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    if get_capability is not None:
        info["cpu_capability"] = str(get_capability())
    if torch.cuda.is_available():
        info["gpus"] = torch.cuda.device_count()
        info["gpu"] = torch.cuda.get_device_name(0)
    info.update(extra)
    return info


def machine_summary(info: Mapping[str, Any] | None) -> str:
    """One line naming the machine of a :func:`machine` record, for the foot of a report.

    Example:
        >>> machine_summary({"cpu": "AMD EPYC 7B13", "cpus": 2, "ram_bytes": 24 * 2**30, "gpu": None,
        ...                  "cpu_flags": {"avx512_bf16": False, "amx_bf16": False, "amx_tile": False},
        ...                  "cpu_capability": "AVX2", "torch": "2.13.0"})
        'AMD EPYC 7B13, 2 CPUs (torch kernels AVX2; no bf16/AMX flags), 24 GB RAM, no GPU; torch 2.13.0'
    """
    if not info:
        return "not recorded"
    flags = info.get("cpu_flags")
    if flags is None:
        bf16 = "bf16/AMX flags unknown"
    else:
        present = [f for f, on in flags.items() if on]
        bf16 = ", ".join(present) if present else "no bf16/AMX flags"
    kernels = f"torch kernels {info['cpu_capability']}; " if info.get("cpu_capability") else ""
    ram = f"{info['ram_bytes'] / 2**30:.0f} GB RAM" if info.get("ram_bytes") else "RAM unknown"
    gpu = info.get("gpu") or "no GPU"
    versions = ", ".join(f"{k} {info[k]}" for k in ("torch", "transformers") if info.get(k))
    line = f"{info.get('cpu') or 'unknown CPU'}, {info.get('cpus')} CPUs ({kernels}{bf16}), {ram}, {gpu}"
    return f"{line}; {versions}" if versions else line


def machine_change(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> str | None:
    """A sentence naming how ``after`` differs in kind from ``before`` (two :func:`machine` records).

    None when there is no ``before`` or the two are of one kind (same CPU model, core count,
    bf16/AMX flags, torch CPU kernels, GPU, torch and transformers versions); platform strings,
    RAM and thread counts may differ.

    Example:
        >>> machine_change({"cpu": "A", "cpus": 2}, {"cpu": "B", "cpus": 2})
        "records from another kind of machine: cpu 'A' -> 'B'"
    """
    if not before:
        return None
    diffs = [f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in _KIND_KEYS if before.get(k) != after.get(k)]
    return "records from another kind of machine: " + "; ".join(diffs) if diffs else None


def resume_machine(
    data: dict[str, Any], before: Mapping[str, Any] | None, source: object = "results"
) -> dict[str, Any]:
    """:func:`machine` now, for a results dict ``data`` whose records were made on ``before``.

    When ``before`` is of another kind (:func:`machine_change`), the change is logged as a
    warning naming ``source`` and added, once, to ``data["machine_notes"]``, which the reports
    print under their tables (:func:`machine_footer`). Pass ``before=None`` for a fresh run.
    """
    here = machine()
    change = machine_change(before, here)
    if change and change not in data.setdefault("machine_notes", []):
        logger.warning("%s: %s", source, change)
        data["machine_notes"].append(change)
    return here


def machine_footer(info: Mapping[str, Any] | None, changes: Sequence[str] = ()) -> str:
    """The lines under a report's table: ``Machine: ...`` and every :func:`machine_change` met on resume.

    Example:
        >>> print(machine_footer(None, ["records from another kind of machine: cpus 2 -> 8"]))
        Machine: not recorded.
        Warning: the results were resumed over records from another kind of machine: cpus 2 -> 8
    """
    lines = [f"Machine: {machine_summary(info)}."]
    lines += [f"Warning: the results were resumed over {c}" for c in changes]
    return "\n".join(lines)


# --------------------------------------------------------------------------- load and memory


def load_1min() -> float | None:
    """The 1-minute load average (other work competing for the CPUs), where the OS reports it."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


class RssSampler:
    """Background thread sampling this process's RSS; :meth:`take` returns the peak since the last take.

    A context manager: the thread runs between ``__enter__`` and ``__exit__``. The RSS is the
    whole process's (model weights included). Needs psutil (the ``eval`` extra).
    """

    def __init__(self, interval: float = 0.01) -> None:
        try:
            import psutil
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("peak memory needs psutil: pip install 'rerank-plugins[eval]'") from e
        self._proc = psutil.Process()
        self._interval = interval
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        rss = int(self._proc.memory_info().rss)
        with self._lock:
            self._peak = max(self._peak, rss)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def take(self) -> int:
        """Peak RSS in bytes since the previous call (or since the sampler started)."""
        self._sample()
        with self._lock:
            peak, self._peak = self._peak, 0
        self._sample()  # the next window starts from the current level
        return peak


def _cuda() -> Any:
    """torch, when it is already imported and a CUDA device is present; else None (no import here)."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and torch.cuda.is_available() else None


def cuda_reset_peak() -> None:
    """Reset torch's peak CUDA memory counter (nothing without CUDA)."""
    torch = _cuda()
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()


def cuda_peak_bytes() -> int | None:
    """Peak CUDA memory allocated by torch since the last reset; None without CUDA."""
    torch = _cuda()
    return int(torch.cuda.max_memory_allocated()) if torch is not None else None


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """Linearly interpolated percentile (numpy's default method), ``p`` in 0..100.

    Example:
        >>> percentile([4.0, 1.0, 3.0, 2.0], 90)
        3.7
    """
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"p must be in 0..100, got {p}")
    pos = (len(xs) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# --------------------------------------------------------------------------- files and reports


def jsonable(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with every value that is not a JSON scalar replaced by its ``repr``.

    Example:
        >>> jsonable({"window": 20, "model": object})
        {'window': 20, 'model': "<class 'object'>"}
    """
    return {str(k): v if isinstance(v, (str, int, float, bool, type(None))) else repr(v) for k, v in options.items()}


def load_json(path: str | os.PathLike[str], hint: str = "remove it or use another --out") -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file does not exist.

    Raises:
        ValueError: the file is not a JSON object (the message names it and ends with ``hint``).
    """
    p = Path(path)
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e}); {hint}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: not a JSON object; {hint}")
    return data


def method_records(data: Mapping[str, Any], label: str) -> dict[str, Any]:
    """The label's per-query records, limited to the run's configured queries as its report is
    (a resumed run with a smaller ``--limit`` keeps the records of the queries it dropped)."""
    records = data["methods"][label]["records"]
    wanted = set(data.get("config", {}).get("queries") or ())
    return {q: r for q, r in records.items() if q in wanted} if wanted else dict(records)


def save_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON through a temporary file and a rename.

    A benchmark killed while saving leaves the previous complete file, never half of one.
    """
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table: ``align`` has one letter per column, ``l`` or ``r`` (default: first l, rest r).

    Example:
        >>> print(markdown_table(["a", "b", "c"], [[1, "x", 2.5]], align="lll"))
        | a | b | c |
        |---|---|---|
        | 1 | x | 2.5 |
    """
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align must be one of l/r per column ({len(header)}), got {align!r}")
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells for {len(header)} columns: {list(row)}")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
