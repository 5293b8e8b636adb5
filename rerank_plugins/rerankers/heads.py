"""Retrieval heads for attention reranking: head profiles, and choosing heads on judged queries.

Not every attention head retrieves. QRHead ("Query-Focused Retrieval Heads Improve Long-Context
Reasoning and Re-ranking", Zhang et al., EMNLP 2025) scores ICR with the few heads whose
query-focused attention singles out relevant documents, chosen on a handful of judged examples.
Here :func:`select_heads` scores every (layer, head) of a model that way and keeps the best;
the result is a :class:`HeadProfile`, a JSON file that ``AttentionReranker(heads=...)`` reads.

A profile holds the model's identity (:meth:`~rerank_plugins.scoring.ScoringCore.model_identity`:
its name, architecture hash and a fingerprint of its embedding weights), the chosen heads with
their scores, every head's score, and how and on what data they were chosen. Profiles shipped
in ``rerank_plugins/rerankers/profiles/`` are picked by ``heads="auto"`` (the default) when the
loaded model's identity matches one; ``heads=None`` opts out (every head, as ICR).

Example:
    >>> from rerank_plugins.rerankers.heads import HeadProfile, HeadScore
    >>> p = HeadProfile(model={"name": "m"}, heads=[HeadScore(3, 1, 0.61), HeadScore(5, 0, 0.58)])
    >>> p.pairs()
    [(3, 1), (5, 0)]
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "PROFILE_FORMAT",
    "HeadProfile",
    "HeadScore",
    "backend_identity",
    "find_profile",
    "identity_matches",
    "profile_paths",
]

logger = logging.getLogger(__name__)

#: the ``format`` field of every head profile
PROFILE_FORMAT = "rerank-plugins/head-profile"
_VERSION = 1
#: relative tolerance on each fingerprint value (dtype changes and 8-bit weights stay within it)
FINGERPRINT_TOLERANCE = 0.02


@dataclass(frozen=True)
class HeadScore:
    """One attention head and its selection score (higher is better)."""

    layer: int
    head: int
    score: float


@dataclass
class HeadProfile:
    """Chosen heads of one model: what :func:`select_heads` writes and ``AttentionReranker`` reads.

    Attributes:
        model: the identity of the model the heads were chosen on (:func:`backend_identity`).
        heads: the chosen heads, best first.
        selection: how and on what data they were chosen (metric, queries, prompt...).
        all_scores: every head's score, ``[layers][heads]`` (``None`` when not kept).
        path: the file it was read from, if any.
    """

    model: dict[str, Any]
    heads: list[HeadScore]
    selection: dict[str, Any] = field(default_factory=dict)
    all_scores: list[list[float]] | None = None
    path: Path | None = None

    def pairs(self, n: int | None = None) -> list[tuple[int, int]]:
        """The chosen ``(layer, head)`` pairs, best first (the first ``n`` of them)."""
        heads = self.heads if n is None else self.heads[:n]
        return [(h.layer, h.head) for h in heads]

    @property
    def label(self) -> str:
        """A short name for reports: the file name, else the model's name."""
        return self.path.name if self.path is not None else str(self.model.get("name", "profile"))

    def to_json(self) -> dict[str, Any]:
        """The profile as plain JSON values."""
        out: dict[str, Any] = {
            "format": PROFILE_FORMAT,
            "version": _VERSION,
            "model": self.model,
            "heads": [{"layer": h.layer, "head": h.head, "score": h.score} for h in self.heads],
            "selection": self.selection,
        }
        if self.all_scores is not None:
            out["all_scores"] = self.all_scores
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the profile as JSON (folders created); returns the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HeadProfile:
        """Read a profile; ``ValueError`` naming the file when it is not one."""
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"head profile {str(p)!r}: no such file")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"head profile {p}: not JSON ({e})") from None
        return cls.from_json(data, path=p)

    @classmethod
    def from_json(cls, data: Any, path: Path | None = None) -> HeadProfile:
        """A profile from its JSON values (checked)."""
        where = f"head profile {path}" if path is not None else "head profile"
        if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
            raise ValueError(f"{where}: not a head profile (format must be {PROFILE_FORMAT!r})")
        if data.get("version") != _VERSION:
            raise ValueError(f"{where}: version {data.get('version')!r} is not supported (expected {_VERSION})")
        model, raw = data.get("model"), data.get("heads")
        if not isinstance(model, dict) or not isinstance(raw, list) or not raw:
            raise ValueError(f"{where}: needs a 'model' object and a non-empty 'heads' list")
        heads = []
        for i, h in enumerate(raw):
            ok = isinstance(h, dict) and all(
                isinstance(h.get(k), int) and not isinstance(h.get(k), bool) and h[k] >= 0 for k in ("layer", "head")
            )
            if not ok or not isinstance(h.get("score", 0.0), (int, float)):
                wanted = "{'layer': int >= 0, 'head': int >= 0, 'score': number}"
                raise ValueError(f"{where}: heads[{i}] must be {wanted}")
            heads.append(HeadScore(int(h["layer"]), int(h["head"]), float(h.get("score", 0.0))))
        if len({(h.layer, h.head) for h in heads}) != len(heads):
            raise ValueError(f"{where}: a head is listed twice")
        selection = data.get("selection") or {}
        all_scores = data.get("all_scores")
        return cls(model=model, heads=heads, selection=selection, all_scores=all_scores, path=path)

    def matches(self, identity: dict[str, Any] | None) -> bool:
        """Whether this profile was chosen on the model ``identity`` describes (:func:`identity_matches`)."""
        return identity_matches(self.model, identity)


# ---------------------------------------------------------------------------- identity and lookup


def backend_identity(backend: Any) -> dict[str, Any] | None:
    """The backend's ``model_identity()``, or ``None`` for a backend that has none (a served model, a double)."""
    method = getattr(backend, "model_identity", None)
    if not callable(method):
        return None
    identity = method()
    return identity if isinstance(identity, dict) else None


def identity_matches(profile: dict[str, Any], identity: dict[str, Any] | None) -> bool:
    """Same architecture (type, layers, heads, config hash) and the same weights fingerprint.

    Fingerprints are compared value by value within :data:`FINGERPRINT_TOLERANCE` (relative),
    so a model loaded in another dtype still matches; one with no fingerprint never does.

    Example:
        >>> a = {"model_type": "qwen2", "layers": 2, "heads": 2, "config_sha256": "ab", "fingerprint": [1.0, 2.0]}
        >>> identity_matches(a, {**a, "fingerprint": [1.001, 2.0]})
        True
        >>> identity_matches(a, {**a, "fingerprint": [1.5, 2.0]})
        False
    """
    if identity is None:
        return False
    for key in ("model_type", "layers", "heads", "config_sha256"):
        if profile.get(key) is None or profile.get(key) != identity.get(key):
            return False
    a, b = profile.get("fingerprint"), identity.get("fingerprint")
    if not isinstance(a, list) or not isinstance(b, list) or not a or len(a) != len(b):
        return False
    return all(
        math.isclose(float(x), float(y), rel_tol=FINGERPRINT_TOLERANCE, abs_tol=1e-6) for x, y in zip(a, b, strict=True)
    )


def profile_paths() -> list[Path]:
    """The head profiles shipped in the package (``rerank_plugins/rerankers/profiles/*.json``), by name."""
    folder = resources.files("rerank_plugins.rerankers").joinpath("profiles")
    if not folder.is_dir():
        return []
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".json"))


def find_profile(
    identity: dict[str, Any] | None, *, prompt: str | None = None, paths: Iterable[Path] | None = None
) -> HeadProfile | None:
    """The shipped profile chosen on the model ``identity`` describes, or ``None``.

    Among matching profiles, one chosen with the same ``prompt`` wins; then the first by file
    name. An unreadable shipped file is logged and skipped.
    """
    if identity is None:
        return None
    found: list[HeadProfile] = []
    for path in profile_paths() if paths is None else paths:
        try:
            profile = HeadProfile.load(path)
        except ValueError as e:
            logger.warning("skipping %s", e)
            continue
        if profile.matches(identity):
            found.append(profile)
    if not found:
        return None
    same_prompt = [p for p in found if p.selection.get("prompt") == prompt]
    return (same_prompt or found)[0]


# ---------------------------------------------------------------------------- per-head metrics
