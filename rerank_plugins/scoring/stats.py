"""Process-wide counters of a scoring backend's work (forward passes, tokens, truncations)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

__all__ = ["CoreStats"]


@dataclass
class CoreStats:
    """Thread-safe counters; benchmarks read deltas of :meth:`snapshot`."""

    forward_passes: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    truncated_documents: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, value in deltas.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "forward_passes": self.forward_passes,
                "prompt_tokens": self.prompt_tokens,
                "generated_tokens": self.generated_tokens,
                "truncated_documents": self.truncated_documents,
            }
