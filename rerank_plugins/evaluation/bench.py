"""The rerank benchmark: quality and cost of each method over a first-stage run.

For every query the top ``depth`` first-stage candidates are reranked by each method and the
rest are kept below them in first-stage order. Two baselines always run: the first stage
itself (``first-stage``) and the identity reranker (``identity``, which measures the
plumbing). When a model is involved, the "bare forward" reference is timed too: one forward
pass over one prompt holding the query and all reranked passages; each method's median
seconds per query is reported as a ratio to it.

Measured per method and query: wall-clock seconds of ``rerank`` (one untimed warm-up call on a
two-document input runs first), forward passes, prompt and generated tokens and truncated
documents (deltas of ``core.stats``), the strategy's own counters (``reranker.rerank_with_stats``),
peak CPU RSS (a background thread samples the process RSS every 10 ms with psutil; the value is
the whole process, model weights included) and, on CUDA, ``torch.cuda.max_memory_allocated``.

Results go to ``<out>/results.json`` (per-query records with the ranked document ids, so
metrics can be recomputed), ``<out>/results.md`` and ``<out>/ndcg_vs_seconds.png``. Running
again with the same ``out`` resumes: finished (method, query) pairs are skipped.

A fused method (``fusion=rrf|interpolate``) whose unfused twin (same name and options) is in
the same results is derived from the twin's recorded scores with
:func:`~rerank_plugins.fusion.fused_hits`, the arithmetic :class:`~rerank_plugins.fusion.FusedReranker`
applies, instead of running the model again: its ranking is the one the wrapped reranker would
give, and its costs are the twin's (fusing 20 scores takes microseconds). The row says so.

Example:
    >>> from rerank_plugins.evaluation import load_candidates, load_trec_qrels
    >>> from rerank_plugins.evaluation.bench import MethodSpec, run_benchmark
    >>> result = run_benchmark(  # doctest: +SKIP
    ...     load_candidates("bm25_dl19_top100.jsonl"), load_trec_qrels("qrels.dl19-passage.txt"),
    ...     [MethodSpec("pointwise", {"model": "Qwen/Qwen2.5-0.5B-Instruct"})], out_dir="bench-out/dl19",
    ...     depth=20, rel_level=2)
    >>> print(result.markdown)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerank_plugins.evaluation.loaders import Qrels, RerankQuery
from rerank_plugins.evaluation.measure import (
    RssSampler,
    cuda_peak_bytes,
    cuda_reset_peak,
    jsonable,
    load_1min,
    load_json,
    machine_footer,
    markdown_table,
    method_records,
    now,
    percentile,
    resume_machine,
    save_json,
)
from rerank_plugins.evaluation.metrics import DEFAULT_MEASURES, evaluate, measure_names
from rerank_plugins.fusion import FusedReranker, FusionOptions, fused_hits

__all__ = [
    "BARE_FORWARD",
    "FIRST_STAGE",
    "FUSION_OPTIONS",
    "IDENTITY",
    "BenchResult",
    "MethodSpec",
    "bare_forward_prompt",
    "build_method",
    "parse_method_spec",
    "render_markdown",
    "run_benchmark",
    "summarize",
]

logger = logging.getLogger(__name__)

FIRST_STAGE = "first-stage"
IDENTITY = "identity"
BARE_FORWARD = "bare-forward"
RESULTS_VERSION = 1
_STAT_KEYS = ("forward_passes", "prompt_tokens", "generated_tokens", "truncated_documents")


# --------------------------------------------------------------------------- method specs


@dataclass(frozen=True)
class MethodSpec:
    """A method to benchmark: registry name, factory options, and the row label.

    Example:
        >>> MethodSpec("listwise", {"window": 20}).label
        'listwise'
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("method name must be a non-empty string")
        if not self.label:
            object.__setattr__(self, "label", self.name)


def _parse_value(text: str) -> Any:
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    low = t.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t


def parse_method_spec(text: str) -> MethodSpec:
    """Parse ``name[:key=value,...]``; values become int, float, bool, None or str.

    ``label=...`` names the result row (so two configurations of one method get two rows).
    Quote a value ('...' or "...") to keep it a string; values cannot contain commas.

    Example:
        >>> parse_method_spec("listwise:mode=first,window=20,label=first-w20")
        MethodSpec(name='listwise', options={'mode': 'first', 'window': 20}, label='first-w20')
        >>> parse_method_spec("attention:calibrate=false").options
        {'calibrate': False}
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("method spec must be a non-empty string like 'listwise:window=20'")
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"method spec {text!r} has no name before ':'")
    options: dict[str, Any] = {}
    if rest.strip():
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key.isidentifier():
                raise ValueError(f"method spec {text!r}: expected key=value, got {item.strip()!r}")
            if key in options:
                raise ValueError(f"method spec {text!r}: option {key!r} given twice")
            options[key] = _parse_value(value)
    label = options.pop("label", None)
    if label is not None and not isinstance(label, str):
        label = str(label)
    return MethodSpec(name=name, options=options, label=label or name)


#: method-spec options that wrap the method in a FusedReranker instead of reaching its factory
FUSION_OPTIONS = ("fusion", "fusion_k", "fusion_weight")


def build_method(spec: MethodSpec) -> Any:
    """The reranker of a method spec; ``fusion=rrf|interpolate`` (``fusion_k``, ``fusion_weight``) fuses it
    with the first stage (:class:`~rerank_plugins.fusion.FusedReranker`; interpolation uses the run's scores).

    Example:
        >>> type(build_method(parse_method_spec("identity:fusion=rrf"))).__name__
        'FusedReranker'
    """
    from rerank_plugins import registry

    fusion = {k: v for k, v in spec.options.items() if k in FUSION_OPTIONS}
    options = {k: v for k, v in spec.options.items() if k not in FUSION_OPTIONS}
    if fusion.get("fusion") in (None, "none"):
        if set(fusion) - {"fusion"}:
            raise ValueError(f"{sorted(set(fusion) - {'fusion'})} need fusion=rrf or fusion=interpolate")
        return registry.create(spec.name, **options)
    return FusedReranker(registry.create(spec.name, **options), **fusion)


def _accepts(factory: Callable[..., Any], param: str) -> bool:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    return any(
        p.name == param or p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()
    )


def with_shared_options(spec: MethodSpec, shared: dict[str, Any]) -> MethodSpec:
    """``spec`` with each ``shared`` option (e.g. ``model``) added where its factory takes it.

    The method's own options win; ``None`` values are not passed.
    """
    from rerank_plugins import registry

    factory = registry.get_factory(spec.name)
    options = dict(spec.options)
    for key, value in shared.items():
        if value is not None and key not in options and _accepts(factory, key):
            options[key] = value
    return MethodSpec(spec.name, options, spec.label)


# --------------------------------------------------------------------------- measuring


def _stats(core: Any) -> dict[str, int]:
    if core is None:
        return dict.fromkeys(_STAT_KEYS, 0)
    snap = core.stats.snapshot()
    return {k: int(snap.get(k, 0)) for k in _STAT_KEYS}


def bare_forward_prompt(
    core: Any, query: str, passages: Sequence[str], doc_max_tokens: int | None
) -> tuple[list[int], int, int | None]:
    """The bare-forward reference prompt: the query and every passage, numbered, in one chat turn.

    Passages are cut to ``doc_max_tokens`` each; when the prompt would still exceed the
    model's context, the per-passage budget is lowered until it fits.

    Returns:
        (token ids, number of truncated passages, the per-passage budget used).
    """
    from rerank_plugins.scoring import Document

    parts: list[Any] = [f"Query: {query}\n\nPassages:\n"]
    for i, text in enumerate(passages, start=1):
        parts += [f"[{i}] ", Document(text), "\n"]
    budget = doc_max_tokens
    limit = int(getattr(core, "max_length", 0) or 0)
    while True:
        enc = core.encode_chat(parts, doc_max_tokens=budget)
        n = len(enc.input_ids)
        if not limit or n <= limit:
            return list(enc.input_ids), int(enc.truncated), budget
        longest = max((e - s for s, e in enc.spans), default=0)
        new_budget = int(longest * limit / n) - 1
        if new_budget < 1 or (budget is not None and new_budget >= budget):
            raise ValueError(f"the bare-forward prompt ({n} tokens) cannot fit the model's context of {limit}")
        budget = new_budget


# --------------------------------------------------------------------------- results file


def _load_results(path: Path) -> dict[str, Any] | None:
    hint = "remove it or pass fresh=True (--fresh)"
    data = load_json(path, hint)
    if data is not None and (data.get("version") != RESULTS_VERSION or "methods" not in data):
        raise ValueError(f"{path}: not a results file of this version; {hint}")
    return data


# --------------------------------------------------------------------------- runner


@dataclass
class BenchResult:
    """What :func:`run_benchmark` produced: the results dict, its summary and the files written."""

    data: dict[str, Any]
    summary: list[dict[str, Any]]
    markdown: str
    results_path: Path
    markdown_path: Path
    plot_path: Path | None


def run_benchmark(
    queries: Sequence[RerankQuery],
    qrels: Qrels,
    methods: Sequence[MethodSpec],
    *,
    out_dir: str | os.PathLike[str],
    depth: int = 20,
    skip: int = 0,
    limit: int | None = None,
    dataset: str = "dataset",
    measures: Sequence[str] = DEFAULT_MEASURES,
    rel_level: int = 1,
    bare_forward: bool = True,
    bare_forward_queries: int | None = None,
    bare_forward_model: str | None = None,
    doc_max_tokens: int | None = 512,
    fresh: bool = False,
    progress: bool | None = None,
    plot: bool = True,
    command: str | None = None,
    in_flight: int = 1,
) -> BenchResult:
    """Rerank the first ``depth`` candidates of each query with every method and measure it.

    Args:
        queries: first-stage candidates per query (see :mod:`rerank_plugins.evaluation.loaders`).
        qrels: judgments; queries without any are skipped (logged).
        methods: methods to run after the two baselines (``first-stage``, ``identity``);
            labels must be unique. Options are passed to ``registry.create`` as given, except
            ``fusion``, ``fusion_k`` and ``fusion_weight`` (:func:`build_method`).
        out_dir: where results.json, results.md and the plot go; an existing results.json
            there is resumed unless ``fresh``.
        depth: how many first-stage candidates each method reranks.
        skip: leave out the first ``skip`` judged queries (input order), e.g. queries used to
            choose something, so that the rest can be reported.
        limit: keep only the first ``limit`` judged queries after ``skip`` (input order).
        dataset: a name recorded in the results (resuming checks it).
        measures: ir-measures names for the table; ``rel_level`` applies to binary ones.
        bare_forward: time the bare-forward reference for each distinct model core.
        bare_forward_queries: time it on the first N queries only (None: all).
        bare_forward_model: a model to time the reference with when no method has a core.
        doc_max_tokens: per-passage token budget of the bare-forward prompt.
        fresh: ignore (overwrite) an existing results.json.
        progress: tqdm bars; None shows them only on a terminal.
        plot: write the nDCG@10-vs-seconds PNG (needs matplotlib).
        command: the command line, recorded in the results.
        in_flight: queries each method reranks at once (threads). Above 1, each query's seconds
            are its latency under that load, the table adds wall seconds per query (throughput),
            and the backend's counters (forward passes, tokens) are not split per query.

    Returns:
        A :class:`BenchResult`.

    Example:
        >>> from rerank_plugins.evaluation.loaders import Candidate, RerankQuery
        >>> qs = [RerankQuery("q1", "red apple", (Candidate("d1", "blue sky", 2.0), Candidate("d2", "red apple", 1.0)))]
        >>> r = run_benchmark(qs, {"q1": {"d2": 1}}, [], out_dir="/tmp/bench-doc", fresh=True, plot=False)
        >>> [row["label"] for row in r.summary]
        ['first-stage', 'identity']
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int, got {depth!r}")
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise ValueError(f"skip must be a non-negative int, got {skip!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if bare_forward_queries is not None and bare_forward_queries < 1:
        raise ValueError(f"bare_forward_queries must be a positive int or None, got {bare_forward_queries!r}")
    measure_names(measures, rel_level)  # fail early on a bad measure name
    if isinstance(in_flight, bool) or not isinstance(in_flight, int) or in_flight < 1:
        raise ValueError(f"in_flight must be a positive int, got {in_flight!r}")

    specs = _all_specs(methods)
    judged = [q for q in queries if q.qid in qrels]
    if len(judged) < len(queries):
        logger.warning("skipping %d queries without judgments", len(queries) - len(judged))
    selected = judged[skip:][:limit]
    selected = [q for q in selected if q.candidates]
    if not selected:
        raise ValueError("no judged query with candidates to benchmark")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    data = None if fresh else _load_results(results_path)
    if data is None:
        data = {"version": RESULTS_VERSION, "created": now(), "config": {}, "methods": {}}
    _check_resume(data, results_path, dataset=dataset, depth=depth, specs=specs)
    here = resume_machine(data, data["config"].get("machine") if data["methods"] else None, results_path)
    data["config"] = {
        "dataset": dataset,
        "depth": depth,
        "skip": skip,
        "limit": limit,
        "queries": [q.qid for q in selected],
        "measures": list(measures),
        "rel_level": rel_level,
        "bare_forward_queries": bare_forward_queries,
        "doc_max_tokens": doc_max_tokens,
        "machine": here,
        "command": command,
        "in_flight": in_flight,
    }
    data["updated"] = now()

    saver = _Saver(results_path, data)
    try:
        with RssSampler() as sampler:
            _run_first_stage(data, selected)
            cores = _run_methods(data, specs, selected, depth, sampler, saver, progress,
                                 bare_forward, bare_forward_queries, bare_forward_model, doc_max_tokens, in_flight)
            del cores
    finally:
        saver.save(force=True)

    summary = summarize(data, qrels, measures=measures, rel_level=rel_level)
    md = render_markdown(summary, data, measures=measures, rel_level=rel_level)
    md_path = out / "results.md"
    md_path.write_text(md, encoding="utf-8")
    plot_path = _plot(summary, out / "ndcg_vs_seconds.png", dataset, measures, rel_level) if plot else None
    return BenchResult(data, summary, md, results_path, md_path, plot_path)


def _all_specs(methods: Sequence[MethodSpec]) -> list[MethodSpec]:
    specs = [MethodSpec(IDENTITY, {}, IDENTITY)]
    for m in methods:
        if not isinstance(m, MethodSpec):
            raise ValueError(f"methods must be MethodSpec objects, got {type(m).__name__}")
        if m.label in (FIRST_STAGE, BARE_FORWARD) or m.label.startswith(BARE_FORWARD + " "):
            raise ValueError(f"label {m.label!r} is reserved; pick another with label=...")
        if m.label == IDENTITY and m.name == IDENTITY and not m.options:
            continue  # the identity baseline is always there
        if any(s.label == m.label for s in specs):
            raise ValueError(f"two methods share the label {m.label!r}; give one a label=...")
        specs.append(m)
    return specs


def _check_resume(data: dict[str, Any], path: Path, *, dataset: str, depth: int, specs: list[MethodSpec]) -> None:
    cfg = data.get("config") or {}
    if not data["methods"]:
        return
    hint = "use another --out folder or --fresh"
    if cfg.get("dataset") != dataset:
        raise ValueError(f"{path} holds results for dataset {cfg.get('dataset')!r}, not {dataset!r}; {hint}")
    if cfg.get("depth") != depth:
        raise ValueError(f"{path} was run with depth {cfg.get('depth')}, not {depth}; {hint}")
    for spec in specs:
        old = data["methods"].get(spec.label)
        if old is None or old.get("kind") != "method":
            continue
        if old.get("name") != spec.name or old.get("options") != jsonable(spec.options):
            raise ValueError(
                f"{path}: label {spec.label!r} was run as {old.get('name')} {old.get('options')}, "
                f"now {spec.name} {jsonable(spec.options)}; give it another label=... or {hint}"
            )


class _Saver:
    """Writes results.json after each record, at most once per second (and always at the end)."""

    def __init__(self, path: Path, data: dict[str, Any], every: float = 1.0) -> None:
        self.path, self.data, self.every = path, data, every
        self._last = 0.0

    def save(self, force: bool = False) -> None:
        t = time.monotonic()
        if force or t - self._last >= self.every:
            self.data["updated"] = now()
            save_json(self.path, self.data)
            self._last = t


def _entry(data: dict[str, Any], label: str, **meta: Any) -> dict[str, Any]:
    entry: dict[str, Any] = data["methods"].setdefault(label, {"records": {}})
    entry.update(meta)
    entry.setdefault("records", {})
    return entry


def _run_first_stage(data: dict[str, Any], queries: Sequence[RerankQuery]) -> None:
    entry = _entry(data, FIRST_STAGE, kind="baseline", name=FIRST_STAGE, options={})
    for q in queries:
        entry["records"].setdefault(q.qid, {"ranking": [c.docid for c in q.candidates], "seconds": None})


def _bar(total: int, initial: int, desc: str, progress: bool | None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="q", disable=None if progress is None else not progress)


def _run_methods(
    data: dict[str, Any],
    specs: list[MethodSpec],
    queries: Sequence[RerankQuery],
    depth: int,
    sampler: RssSampler,
    saver: _Saver,
    progress: bool | None,
    bare_forward: bool,
    bare_forward_queries: int | None,
    bare_forward_model: str | None,
    doc_max_tokens: int | None,
    in_flight: int = 1,
) -> list[Any]:

    cores: list[Any] = []

    def reference(core: Any, model_name: str) -> str:
        """Label of ``core``'s bare-forward reference, timing it first if not done yet."""
        for i, c in enumerate(cores):
            if c is core:
                return _bare_label(i)
        cores.append(core)
        label = _bare_label(len(cores) - 1)
        if bare_forward:
            subset = list(queries[:bare_forward_queries] if bare_forward_queries else queries)
            _run_bare_forward(data, label, model_name, core, subset, depth, doc_max_tokens,
                              sampler, saver, progress)
        return label

    for spec in sorted(specs, key=_is_fused):  # unfused first: fused rows derive from them
        entry = _entry(data, spec.label, kind="method", name=spec.name, options=jsonable(spec.options))
        todo = [q for q in queries if q.qid not in entry["records"]]
        twin = _unfused_twin(data, spec)
        if twin is not None:
            todo = _derive_fused(entry, data["methods"][twin], twin, spec, todo, depth)
            if not todo:
                saver.save()
                continue
        try:
            reranker = build_method(spec)
        except (TypeError, ValueError) as e:
            raise ValueError(f"method {spec.label!r}: cannot build {spec.name!r} with {spec.options}: {e}") from e
        if callable(getattr(reranker, "describe", None)):
            # every setting as resolved (the dtype "auto" picked on this machine among them)
            entry["settings"] = jsonable(reranker.describe())
        core = getattr(reranker, "core", None)
        if core is not None:
            model_name = str(getattr(core, "name", spec.options.get("model", "")))
            entry["model"] = model_name
            entry["reference"] = reference(core, model_name)
        if not todo:
            logger.info("%s: all %d queries already done", spec.label, len(queries))
            continue
        logger.info("%s: %d queries to run (%d done)", spec.label, len(todo), len(queries) - len(todo))
        # Untimed warm-up on a two-document input: first-call costs (allocator, threads) are not the method's.
        first = queries[0]
        reranker.rerank(first.query, [c.text for c in first.candidates[: min(2, depth)]])
        with _bar(len(queries), len(queries) - len(todo), spec.label, progress) as bar:
            if in_flight == 1:
                for q in todo:
                    entry["records"][q.qid] = _measure(reranker, core, q, depth, sampler)
                    saver.save()
                    bar.update(1)
            else:
                _measure_in_flight(entry, reranker, todo, depth, sampler, saver, bar, in_flight)

    if bare_forward and not cores and bare_forward_model:
        from rerank_plugins.scoring import get_core

        reference(get_core(bare_forward_model), bare_forward_model)
    return cores


def _is_fused(spec: MethodSpec) -> bool:
    return spec.options.get("fusion") not in (None, "none")


def _unfused_twin(data: dict[str, Any], spec: MethodSpec) -> str | None:
    """The label of a recorded method that is ``spec`` without its fusion options, if any."""
    if not _is_fused(spec):
        return None
    base = jsonable({k: v for k, v in spec.options.items() if k not in FUSION_OPTIONS})
    for label, entry in data["methods"].items():
        if entry.get("kind") == "method" and entry.get("name") == spec.name and entry.get("options") == base:
            return label
    return None


def _derive_fused(
    entry: dict[str, Any], twin: dict[str, Any], twin_label: str, spec: MethodSpec, todo: Sequence[RerankQuery],
    depth: int,
) -> list[RerankQuery]:
    """Fills ``entry`` with ``twin``'s recorded rankings fused with the first stage; returns what is left to run."""
    options = FusionOptions.build({k: v for k, v in spec.options.items() if k in FUSION_OPTIONS})
    left = []
    for q in todo:
        record = _fused_record(twin["records"].get(q.qid), q, depth, options)
        if record is None:
            left.append(q)
        else:
            entry["records"][q.qid] = record
    if len(left) < len(todo):
        entry["derived_from"] = twin_label
        for key in ("model", "reference"):
            if key in twin:
                entry[key] = twin[key]
        entry["settings"] = {**twin.get("settings", {}), **options.settings()}
    return left


def _fused_record(
    base: dict[str, Any] | None, q: RerankQuery, depth: int, options: FusionOptions
) -> dict[str, Any] | None:
    """``base`` (an unfused record of ``q``) with its top ``depth`` fused; None when it cannot be placed."""
    top = q.candidates[:depth]
    position = {c.docid: i for i, c in enumerate(top)}
    if base is None or len(position) != len(top):  # a repeated docid: scores cannot be placed
        return None
    ranked, scores = base.get("ranking", [])[: len(top)], base.get("scores") or []
    if len(scores) != len(top) or sorted(position.get(d, -1) for d in ranked) != list(range(len(top))):
        return None
    by_index = [0.0] * len(top)
    for docid, score in zip(ranked, scores, strict=True):
        by_index[position[docid]] = float(score)
    hits = fused_hits(by_index, options, [c.score for c in top])
    return {
        **{k: v for k, v in base.items() if k not in ("ranking", "scores")},
        "ranking": [top[h.index].docid for h in hits] + [c.docid for c in q.candidates[depth:]],
        "scores": [float(h.score) for h in hits],
        "derived": True,
    }


def _measure_in_flight(
    entry: dict[str, Any], reranker: Any, todo: Sequence[RerankQuery], depth: int, sampler: RssSampler,
    saver: _Saver, bar: Any, in_flight: int,
) -> None:
    """Rerank ``todo`` with ``in_flight`` queries at once; adds the wall time to the method's entry."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    t0 = time.perf_counter()
    with ThreadPoolExecutor(in_flight, thread_name_prefix="bench-query") as pool:
        futures = {pool.submit(_measure, reranker, None, q, depth, sampler): q for q in todo}
        for future in as_completed(futures):
            entry["records"][futures[future].qid] = future.result()
            saver.save()
            bar.update(1)
    entry["in_flight"] = in_flight
    entry["wall_seconds"] = entry.get("wall_seconds", 0.0) + time.perf_counter() - t0
    entry["wall_queries"] = entry.get("wall_queries", 0) + len(todo)


def _bare_label(i: int) -> str:
    return BARE_FORWARD if i == 0 else f"{BARE_FORWARD} {i + 1}"


def _measure(reranker: Any, core: Any, q: RerankQuery, depth: int, sampler: RssSampler) -> dict[str, Any]:
    top = q.candidates[:depth]
    texts = [c.text for c in top]
    cuda_reset_peak()
    sampler.take()
    before = _stats(core)
    t0 = time.perf_counter()
    if isinstance(reranker, FusedReranker):  # interpolation reads the first stage's scores
        hits, extra = reranker.rerank_with_stats(q.query, texts, retrieval_scores=[c.score for c in top])
    elif hasattr(reranker, "rerank_with_stats"):
        hits, extra = reranker.rerank_with_stats(q.query, texts)
    else:  # any object with the Reranker protocol's rerank
        hits, extra = reranker.rerank(q.query, texts), {}
    seconds = time.perf_counter() - t0
    after = _stats(core)
    order = [h.index for h in hits]
    if sorted(order) != list(range(len(top))):
        raise RuntimeError(
            f"{type(reranker).__name__} returned indices {order} for {len(top)} documents of query {q.qid!r}: "
            "not a permutation (contract violation)"
        )
    record: dict[str, Any] = {
        "seconds": seconds,
        "ranking": [top[i].docid for i in order] + [c.docid for c in q.candidates[depth:]],
        "scores": [float(h.score) for h in hits],
        # core None: queries run at once and the backend's counters cannot be split between them
        **({k: after[k] - before[k] for k in _STAT_KEYS} if core is not None else {}),
        "rss_peak_bytes": sampler.take(),
        "load_1min": load_1min(),
    }
    cuda = cuda_peak_bytes()
    if cuda is not None:
        record["cuda_peak_bytes"] = cuda
    if isinstance(extra, dict):
        record["extra"] = {
            str(k): float(v) for k, v in extra.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    return record


def _run_bare_forward(
    data: dict[str, Any],
    label: str,
    model_name: str,
    core: Any,
    queries: Sequence[RerankQuery],
    depth: int,
    doc_max_tokens: int | None,
    sampler: RssSampler,
    saver: _Saver,
    progress: bool | None,
) -> None:
    entry = _entry(data, label, kind="reference", name=BARE_FORWARD, model=model_name,
                   options={"doc_max_tokens": doc_max_tokens})
    todo = [q for q in queries if q.qid not in entry["records"]]
    if not todo:
        return
    first = queries[0]
    core.forward(bare_forward_prompt(core, first.query, [c.text for c in first.candidates[:2]], doc_max_tokens)[0])
    with _bar(len(queries), len(queries) - len(todo), label, progress) as bar:
        for q in todo:
            ids, truncated, budget = bare_forward_prompt(
                core, q.query, [c.text for c in q.candidates[:depth]], doc_max_tokens
            )
            cuda_reset_peak()
            sampler.take()
            before = _stats(core)
            t0 = time.perf_counter()
            core.forward(ids)
            seconds = time.perf_counter() - t0
            after = _stats(core)
            record: dict[str, Any] = {
                "seconds": seconds,
                "forward_passes": after["forward_passes"] - before["forward_passes"],
                "prompt_tokens": after["prompt_tokens"] - before["prompt_tokens"],
                "generated_tokens": 0,
                "truncated_documents": truncated,
                "doc_max_tokens": budget,
                "rss_peak_bytes": sampler.take(),
                "load_1min": load_1min(),
            }
            cuda = cuda_peak_bytes()
            if cuda is not None:
                record["cuda_peak_bytes"] = cuda
            entry["records"][q.qid] = record
            saver.save()
            bar.update(1)


# --------------------------------------------------------------------------- summary and report


def summarize(
    data: dict[str, Any], qrels: Qrels, *, measures: Sequence[str] = DEFAULT_MEASURES, rel_level: int = 1
) -> list[dict[str, Any]]:
    """One row per method (baselines first, the bare forward last) from a results dict.

    Quality is over the queries of the current configuration that the method finished;
    costs are per query (medians, p90, means), memory is the peak over its queries.
    """
    names = measure_names(measures, rel_level)
    rows = []
    medians: dict[str, float] = {}
    for label, entry in data["methods"].items():
        recs = method_records(data, label)
        row: dict[str, Any] = {"label": label, "kind": entry.get("kind"), "name": entry.get("name"),
                               "options": entry.get("options", {}), "queries": len(recs),
                               "model": entry.get("model"), "reference": entry.get("reference"),
                               "derived_from": entry.get("derived_from")}
        if recs and entry.get("kind") != "reference":
            ev = evaluate(qrels, {q: r["ranking"] for q, r in recs.items()}, measures, rel_level)
            row["metrics"] = ev.aggregate
            row["per_query"] = ev.per_query
        secs = [r["seconds"] for r in recs.values() if r.get("seconds") is not None]
        if secs:
            row["median_s"] = statistics.median(secs)
            row["p90_s"] = percentile(secs, 90)
            row["mean_s"] = statistics.fmean(secs)
            medians[label] = row["median_s"]
        for key in _STAT_KEYS:
            vals = [r[key] for r in recs.values() if key in r]
            if vals:
                row[f"{key}_per_q"] = statistics.fmean(vals)
        rss = [r["rss_peak_bytes"] for r in recs.values() if "rss_peak_bytes" in r]
        if rss:
            row["rss_peak_mb"] = max(rss) / 2**20
        loads = [r["load_1min"] for r in recs.values() if r.get("load_1min") is not None]
        if loads:
            row["load_1min"] = statistics.fmean(loads)
        cuda = [r["cuda_peak_bytes"] for r in recs.values() if "cuda_peak_bytes" in r]
        if cuda:
            row["cuda_peak_mb"] = max(cuda) / 2**20
        extra_keys = sorted({k for r in recs.values() for k in r.get("extra", {})})
        if entry.get("wall_queries"):
            row["in_flight"] = entry.get("in_flight")
            row["wall_s_per_q"] = entry["wall_seconds"] / entry["wall_queries"]
        if extra_keys:
            row["extra_per_q"] = {
                k: statistics.fmean([r["extra"][k] for r in recs.values() if k in r.get("extra", {})])
                for k in extra_keys
            }
        rows.append(row)
    for row in rows:
        ref = row.get("reference")
        if ref in medians and "median_s" in row and medians[ref] > 0:
            row["x_bare"] = row["median_s"] / medians[ref]
        if row["kind"] == "reference" and "median_s" in row:
            row["x_bare"] = 1.0
    order = {"baseline": 0, "method": 1, "reference": 2}
    rows.sort(key=lambda r: order.get(r["kind"], 1))  # stable: run order within a kind
    for row in rows:
        row.setdefault("metrics", {})
        for n in names:
            row["metrics"].setdefault(n, None)
    return rows


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value >= 1 else f"{value:.3g}"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(
    summary: list[dict[str, Any]], data: dict[str, Any], *, measures: Sequence[str] = DEFAULT_MEASURES,
    rel_level: int = 1,
) -> str:
    """The results table as Markdown, with a short header saying what was run."""
    names = measure_names(measures, rel_level)
    cfg = data["config"]
    has_cuda = any("cuda_peak_mb" in r for r in summary)
    header = ["method", "queries", *names, "median s/q", "p90 s/q", "× bare fwd", "fwd passes/q",
              "prompt tok/q", "gen tok/q", "trunc docs/q", "peak RSS MB", "load"]
    if has_cuda:
        header.append("peak CUDA MB")
    header.append("other (mean/q)")
    rows = []
    for r in summary:
        label = r["label"]
        if r["kind"] == "method" and r.get("options"):
            shown = {k: v for k, v in r["options"].items() if k not in ("model", "device", "dtype")}
            if shown:
                label += " (" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")"
        cells = [label, str(r["queries"])]
        cells += [_fmt(r["metrics"].get(n), 4) for n in names]
        cells += [_fmt_seconds(r.get("median_s")), _fmt_seconds(r.get("p90_s")), _fmt(r.get("x_bare"), 2),
                  _fmt(r.get("forward_passes_per_q"), 1), _fmt(r.get("prompt_tokens_per_q"), 0),
                  _fmt(r.get("generated_tokens_per_q"), 1), _fmt(r.get("truncated_documents_per_q"), 2),
                  _fmt(r.get("rss_peak_mb"), 0), _fmt(r.get("load_1min"), 1)]
        if has_cuda:
            cells.append(_fmt(r.get("cuda_peak_mb"), 0))
        extra = r.get("extra_per_q") or {}
        cells.append(", ".join(f"{k}={v:.2f}" for k, v in extra.items()) or "—")
        rows.append(cells)
    lines = [
        f"Dataset `{cfg.get('dataset')}`: {len(cfg.get('queries') or [])} queries, top-{cfg.get('depth')} "
        f"of the first stage reranked, the rest kept below in first-stage order.",
        "",
        markdown_table(header, rows),
    ]
    cpus = (cfg.get("machine") or {}).get("cpus")
    lines += ["", f"load: mean 1-minute load average of the machine ({cpus} CPUs) while the method ran; "
              "above the CPU count, other work competed for the cores and the times are inflated."]
    flights = [r for r in summary if r.get("wall_s_per_q") is not None]
    if flights:
        lines += ["", f"{cfg.get('in_flight')} queries in flight: s/q above is each query's latency under that "
                  "load; wall seconds per query (throughput): "
                  + ", ".join(f"{r['label']} {_fmt_seconds(r['wall_s_per_q'])}" for r in flights) + "."]
    derived = [r for r in summary if r.get("derived_from")]
    if derived:
        lines += ["", "Derived rows (the fusion FusedReranker applies, computed from the unfused row's recorded "
                  "scores; the costs are that row's): "
                  + ", ".join(f"{r['label']} from {r['derived_from']}" for r in derived) + "."]
    refs = [r for r in summary if r["kind"] == "reference"]
    if refs:
        lines += ["", "Bare forward: one forward pass over one prompt holding the query and all reranked "
                  f"passages (each cut to {cfg.get('doc_max_tokens')} tokens, less where the prompt would "
                  "exceed the model's context); × bare fwd = a method's median s/q ÷ the bare forward's "
                  "median s/q on the same model."]
        for r in refs:
            lines.append(f"- `{r['label']}`: {r.get('model')}, timed on {r['queries']} queries")
    lines += ["", machine_footer(cfg.get("machine"), data.get("machine_notes") or []), ""]
    return "\n".join(lines)


def _plot(summary: list[dict[str, Any]], path: Path, dataset: str, measures: Sequence[str], rel_level: int) -> Path:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the plot needs matplotlib: pip install 'rerank-plugins[eval]'") from e
    key = measure_names([measures[0]], rel_level)[0]
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    placed: list[tuple[float, float]] = []
    xmax = max((r.get("median_s") or 0.0 for r in summary), default=0.0) or 1.0
    ys = [r["metrics"].get(key) for r in summary if r["metrics"].get(key) is not None]
    yspan = (max(ys) - min(ys)) if ys else 0.0
    yspan = yspan or 1.0
    for r in summary:
        x = r.get("median_s") or 0.0
        if r["kind"] == "reference":
            ax.axvline(x, linestyle="--", linewidth=1, color="grey")
            ax.annotate(r["label"], (x, 0.02), xycoords=("data", "axes fraction"), rotation=90,
                        textcoords="offset points", xytext=(3, 0), fontsize=8, color="grey")
            continue
        y = r["metrics"].get(key)
        if y is None:
            continue
        ax.scatter([x], [y], s=36)
        # Stack the labels of points that coincide (e.g. first-stage and identity).
        clash = sum(1 for px, py in placed if abs(px - x) < 0.03 * xmax and abs(py - y) < 0.03 * yspan)
        placed.append((x, y))
        ax.annotate(r["label"], (x, y), textcoords="offset points", xytext=(5, 4 - 11 * clash), fontsize=8)
    ax.set_xlabel("median seconds per query (first stage: precomputed, shown at 0)")
    ax.set_ylabel(key)
    ax.set_title(f"{dataset}: {key} against cost")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path
