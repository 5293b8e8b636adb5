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
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "PROFILE_FORMAT",
    "HeadProfile",
    "HeadScore",
    "JudgedQuery",
    "backend_identity",
    "find_profile",
    "identity_matches",
    "mean_relevant_rank",
    "ndcg_at_k",
    "profile_paths",
    "select_heads",
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


def _order(scores: torch.Tensor) -> torch.Tensor:
    """Per row, document indices best first; equal scores keep input order (as ``hits_from_scores``)."""
    return torch.sort(-scores.double(), dim=-1, stable=True).indices


def ndcg_at_k(scores: torch.Tensor, grades: Sequence[int], k: int = 10) -> torch.Tensor:
    """nDCG@k of each row's ranking of the same documents (gain = grade, log2 discount).

    The ideal ranking is taken over ``grades`` (the candidates' judgments), as trec_eval does
    for a run that holds every judged document.

    Args:
        scores: ``[rows, n]`` one ranking score per document and row (e.g. per head).
        grades: ``n`` graded judgments (0 = not relevant).
        k: cut-off.

    Example:
        >>> ndcg_at_k(torch.tensor([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5]]), [1, 0, 0], k=10).tolist()
        [1.0, 0.5]
    """
    g = torch.tensor([float(x) for x in grades], dtype=torch.float64)
    n = g.shape[0]
    discount = 1.0 / torch.log2(torch.arange(2, n + 2, dtype=torch.float64))
    discount[k:] = 0.0
    dcg = (g[_order(scores)] * discount).sum(-1)
    ideal = (torch.sort(g, descending=True).values * discount).sum()
    if float(ideal) == 0.0:
        return torch.zeros(scores.shape[0], dtype=torch.float64)
    return dcg / ideal


def mean_relevant_rank(scores: torch.Tensor, grades: Sequence[int], rel_level: int = 1) -> torch.Tensor:
    """Per row, ``1 - (mean rank of the relevant documents - 1) / n``: 1 puts them first, near 0 last.

    Example:
        >>> mean_relevant_rank(torch.tensor([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5]]), [1, 0, 0]).tolist()
        [1.0, 0.33333333333333337]
    """
    relevant = torch.tensor([int(x) >= rel_level for x in grades])
    n = relevant.shape[0]
    if not bool(relevant.any()):
        return torch.zeros(scores.shape[0], dtype=torch.float64)
    ranks = torch.empty(scores.shape, dtype=torch.float64)
    order = _order(scores)
    ranks.scatter_(-1, order, torch.arange(1, n + 1, dtype=torch.float64).expand(scores.shape).contiguous())
    return 1.0 - (ranks[:, relevant].mean(-1) - 1.0) / n


def _metric(name: str, rel_level: int) -> Callable[[torch.Tensor, Sequence[int]], torch.Tensor]:
    key = name.lower()
    if key.startswith("ndcg@"):
        try:
            k = int(key.split("@", 1)[1])
        except ValueError:
            k = 0
        if k < 1:
            raise ValueError(f"metric must be 'ndcg@K' with K >= 1 or 'rank', got {name!r}")
        return lambda scores, grades: ndcg_at_k(scores, grades, k)
    if key == "rank":
        return lambda scores, grades: mean_relevant_rank(scores, grades, rel_level)
    raise ValueError(f"metric must be 'ndcg@K' (e.g. 'ndcg@10') or 'rank', got {name!r}")


# ---------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class JudgedQuery:
    """A query, its candidate documents in first-stage order, and one graded judgment per candidate."""

    qid: str
    query: str
    documents: tuple[str, ...]
    grades: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.documents) != len(self.grades):
            raise ValueError(f"query {self.qid!r}: {len(self.documents)} documents but {len(self.grades)} grades")


def select_heads(
    backend: Any,
    queries: Sequence[JudgedQuery],
    *,
    n_heads: int = 8,
    metric: str = "ndcg@10",
    rel_level: int = 1,
    data: dict[str, Any] | None = None,
    progress: bool | None = None,
    **attention_options: Any,
) -> HeadProfile:
    """Score every (layer, head) of ``backend``'s model on judged queries and keep the best ``n_heads``.

    Per query, the candidates go into one attention prompt exactly as ``AttentionReranker``
    builds it (same ``attention_options``); each head's calibrated query-to-document attention
    (the real query's minus the content-free query's, low outlier tokens dropped, summed per
    document) ranks the candidates, and ``metric`` scores that ranking against the grades.
    A head's score is the mean over queries; heads are kept best first (ties: lower layer,
    then lower head). Queries with no relevant candidate are left out (and counted).

    Args:
        backend: a scoring backend with the ``"attention"`` primitive, or a model name.
        queries: judged queries (their candidates must fit one prompt: lower their number or
            ``doc_max_tokens`` otherwise).
        n_heads: how many heads to keep.
        metric: ``"ndcg@K"`` (graded gains) or ``"rank"`` (:func:`mean_relevant_rank`).
        rel_level: the lowest grade counted relevant (which queries are usable; ``"rank"``).
        data: what the queries are (source files, split, skip/limit...), recorded as is.
        progress: a tqdm bar (default: only on a terminal).
        **attention_options: ``AttentionReranker`` options (prompt, order, doc_max_tokens,
            calibrate, outlier_std, content_free_query); ``heads`` and ``layers`` are not allowed.

    Returns:
        The profile (write it with :meth:`HeadProfile.save`); ``selection`` also records the
        same metric for every head summed (ICR's default) on the same queries.

    Example:
        >>> q = JudgedQuery("1", "capital of France", ("Berlin is in Germany.", "Paris is France's capital."), (0, 1))
        >>> profile = select_heads("path/to/Qwen2.5-0.5B-Instruct", [q], n_heads=4)  # doctest: +SKIP
        >>> profile.save("qwen-heads.json")  # doctest: +SKIP
    """
    from rerank_plugins.rerankers.attention import AttentionReranker

    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"n_heads must be a positive int, got {n_heads!r}")
    if "heads" in attention_options or "layers" in attention_options:
        raise ValueError("select_heads scores every head of every layer: do not pass heads or layers")
    score = _metric(metric, rel_level)
    reranker = AttentionReranker(backend, heads=None, **attention_options)
    n_layers, n_per_layer = reranker.core.attention_layout()
    usable = [q for q in queries if any(g >= rel_level for g in q.grades)]
    if not usable:
        raise ValueError("no query has a relevant candidate: nothing to choose heads on")
    started = time.perf_counter()
    total = torch.zeros(n_layers * n_per_layer, dtype=torch.float64)
    all_heads = torch.zeros((), dtype=torch.float64)
    tokens = 0
    from tqdm.auto import tqdm

    show = progress if progress is not None else _is_terminal()
    for q in tqdm(usable, desc="select-heads", unit="query", disable=not show):
        docs, summed, n_tokens = reranker.head_document_scores(q.query, list(q.documents))
        tokens += n_tokens
        total += score(docs, q.grades)
        all_heads += score(summed[None], q.grades)[0]
    mean = total / len(usable)
    ranked = sorted(range(len(mean)), key=lambda j: (-float(mean[j]), j))
    chosen = ranked[:n_heads]
    options = reranker.options.settings()
    selection = {
        "method": "per-head calibrated query-to-document attention (QRHead-style), mean over queries",
        "metric": metric,
        "rel_level": rel_level,
        "n_heads": len(chosen),
        "queries": len(usable),
        "queries_without_relevant": len(queries) - len(usable),
        "qids": [q.qid for q in usable],
        # the same metric for ICR's sum over every head, on the same queries (in-sample)
        "all_heads_score": round(float(all_heads) / len(usable), 4),
        "prompt": options["prompt"],
        "order": options["order"],
        "doc_max_tokens": options["doc_max_tokens"],
        "calibrate": options["calibrate"],
        "outlier_std": options["outlier_std"],
        "content_free_query": options["content_free_query"],
        "prompt_tokens": tokens,
        "seconds": round(time.perf_counter() - started, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": dict(data or {}),
    }
    identity = backend_identity(reranker.core) or {"name": reranker.core.name}
    grid = mean.view(n_layers, n_per_layer)
    return HeadProfile(
        model=identity,
        heads=[HeadScore(j // n_per_layer, j % n_per_layer, round(float(mean[j]), 4)) for j in chosen],
        selection=selection,
        all_scores=[[round(float(x), 4) for x in row] for row in grid],
    )


def _is_terminal() -> bool:
    import sys

    return sys.stderr.isatty()
