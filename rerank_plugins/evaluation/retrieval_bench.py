"""Dense-retrieval benchmark: build time, query latency and quality of FAISS indexes on a BEIR set.

For each embedder the corpus is embedded once (timed), then each index kind is built from
those vectors (timed separately) and every query is run one at a time, as an application
would: query embedding (once per embedder) and FAISS search (per index kind) are timed
separately, and the latency of a query is their sum (median and p90 reported). Quality is
measured with ir-measures on the top-``k`` ranking (default nDCG@10 and R@100); first-stage
runs given as TREC files (e.g. BM25) are evaluated beside them on the same queries. Each dense
ranking is written as a TREC run, ready for
``rerank-plugins bench --beir ... --run`` (LLM reranking of the dense top-k).

Writes ``OUT/results.json``, ``OUT/results.md`` and ``OUT/run.<label>.txt``.

Example:
    >>> from rerank_plugins.evaluation.retrieval_bench import run_retrieval_benchmark
    >>> res = run_retrieval_benchmark(  # doctest: +SKIP
    ...     "shared/data/scifact", embedders=["~/.cache/rerank-models/minilm"], out_dir="bench-out/dense")
    >>> print(res.markdown)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rerank_plugins.evaluation.loaders import load_beir, load_trec_run
from rerank_plugins.evaluation.measure import (
    load_1min,
    machine,
    machine_footer,
    markdown_table,
    now,
    percentile,
    save_json,
)
from rerank_plugins.evaluation.metrics import evaluate
from rerank_plugins.retrieval import FaissIndex, IndexKind, get_embedder, import_faiss

__all__ = ["RetrievalBenchResult", "render_markdown", "run_retrieval_benchmark", "write_trec_run"]

logger = logging.getLogger(__name__)

DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10", "R@100")
_PARAMS = {
    "flat": (),
    "hnsw": ("hnsw_m", "ef_construction", "ef_search"),
    "ivf": ("nlist", "nprobe"),
    "ivfpq": ("nlist", "nprobe", "pq_m", "pq_nbits"),
}


@dataclass
class RetrievalBenchResult:
    """What :func:`run_retrieval_benchmark` produced."""

    data: dict[str, Any]
    markdown: str
    results_path: Path
    markdown_path: Path
    run_paths: dict[str, Path]


def write_trec_run(path: Path, rankings: Mapping[str, Sequence[tuple[str, float]]], tag: str) -> Path:
    """Write ``qid -> [(docid, score)]`` (best first) as a TREC run file."""
    with path.open("w", encoding="utf-8") as f:
        for qid, docs in rankings.items():
            for rank, (docid, score) in enumerate(docs, 1):
                f.write(f"{qid} Q0 {docid} {rank} {score:.6f} {tag}\n")
    return path


def _label(name: str) -> str:
    return Path(os.path.expanduser(name)).name or name


def run_retrieval_benchmark(
    beir_dir: str | os.PathLike[str],
    *,
    embedders: Sequence[str],
    kinds: Sequence[IndexKind] = ("flat",),
    split: str = "test",
    k: int = 100,
    measures: Sequence[str] = DEFAULT_MEASURES,
    baseline_runs: Mapping[str, str | os.PathLike[str]] | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    device: str | None = None,
    out_dir: str | os.PathLike[str] = "bench-out/retrieval",
    progress: bool | None = None,
    command: str | None = None,
) -> RetrievalBenchResult:
    """Benchmark dense retrieval on a BEIR folder (full corpus) for each embedder and index kind.

    Args:
        beir_dir: BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
        embedders: sentence-transformers hub ids or folders.
        kinds: FAISS index kinds to build over each embedder's vectors.
        split: qrels split; its judged queries are the benchmark queries.
        k: retrieval depth (ranking evaluated and written as a run).
        measures: ir-measures names.
        baseline_runs: label -> TREC run file, evaluated on the same queries.
        limit: only the first ``limit`` judged queries (file order).
        batch_size: corpus embedding batch size.
        device: embedder device (default: sentence-transformers' choice).
        out_dir: output folder.
        progress: progress bars (default: only on a terminal).
        command: the command line, recorded in the results.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_beir(beir_dir, split=split)
    qids = list(ds.queries)[:limit] if limit else list(ds.queries)
    qtexts = [ds.queries[q] for q in qids]
    doc_ids, doc_texts = list(ds.corpus), list(ds.corpus.values())
    qrels = {q: ds.qrels[q] for q in qids}
    logger.info("%s: %d documents, %d queries", Path(beir_dir).name, len(doc_ids), len(qids))

    rows: list[dict[str, Any]] = []
    run_paths: dict[str, Path] = {}
    data: dict[str, Any] = {
        "dataset": f"{Path(beir_dir).name}-{split}",
        "documents": len(doc_ids),
        "queries": len(qids),
        "k": k,
        "measures": list(measures),
        "command": command,
        "started": now(),
        "finished": None,
        "machine": machine(faiss=import_faiss().__version__, numpy=np.__version__),
        "rows": rows,
    }
    for label, path in (baseline_runs or {}).items():
        run = load_trec_run(path)
        rankings = {q: [d for d, _ in run.get(q, [])][:k] for q in qids}
        missing = [q for q, docs in rankings.items() if not docs]
        if missing:
            raise ValueError(f"run {path} has no ranking for {len(missing)} benchmark queries (first {missing[0]!r})")
        ev = evaluate(qrels, rankings, measures)
        rows.append({"label": label, "kind": "run file", "run": str(path), "metrics": ev.aggregate})
        _write(out, data)

    for name in embedders:
        emb_label = _label(name)
        t0 = time.perf_counter()
        embedder = get_embedder(name, device=device)
        load_s = time.perf_counter() - t0
        load_before = load_1min()
        t0 = time.perf_counter()
        doc_vecs = embedder.embed_documents(doc_texts, batch_size=batch_size, show_progress=progress)
        encode_s = time.perf_counter() - t0
        logger.info("%s: encoded %d documents in %.1f s", emb_label, len(doc_texts), encode_s)
        # queries one at a time, as an application asks them: embedding (per embedder) and
        # FAISS search (per index kind) are timed separately; latency = their sum per query
        embedder.embed_queries(qtexts[:1])  # warm-up
        qvecs, embed_times = [], []
        for q in qtexts:
            t0 = time.perf_counter()
            qvecs.append(embedder.embed_queries([q]))
            embed_times.append(time.perf_counter() - t0)
        qmat = np.concatenate(qvecs)
        for kind in kinds:
            label = f"dense-{emb_label}-{kind}"
            t0 = time.perf_counter()
            index = FaissIndex(embedder, kind=kind, batch_size=batch_size, device="cpu")
            index.add_embeddings(doc_vecs, doc_texts, ids=doc_ids)
            build_s = time.perf_counter() - t0
            index.search_vectors(qmat[:1], k=k)  # warm-up
            results, search_times = [], []
            for i in range(len(qtexts)):
                t0 = time.perf_counter()
                results.append(index.search_vectors(qmat[i : i + 1], k=k)[0])
                search_times.append(time.perf_counter() - t0)
            latencies = [a + b for a, b in zip(embed_times, search_times, strict=True)]
            ranked = {q: [(r.id, r.score) for r in res] for q, res in zip(qids, results, strict=True)}
            ev = evaluate(qrels, {q: [d for d, _ in docs] for q, docs in ranked.items()}, measures)
            run_paths[label] = write_trec_run(out / f"run.{label}.txt", ranked, label)
            rows.append({
                "label": label,
                "kind": kind,
                "embedder": name,
                "dimension": embedder.dimension,
                "factory": index.factory,
                "params": {k_: index.params[k_] for k_ in _PARAMS[index.kind]},
                "model_load_s": round(load_s, 3),
                "encode_corpus_s": round(encode_s, 3),
                "index_build_s": round(build_s, 4),
                "query_embed_median_s": statistics.median(embed_times),
                "search_only_median_s": statistics.median(search_times),
                "query_latency_median_s": statistics.median(latencies),
                "query_latency_p90_s": percentile(latencies, 90),
                "load_1min_before_after": [load_before, load_1min()],
                "metrics": ev.aggregate,
                "run": str(run_paths[label]),
            })  # fmt: skip
            _write(out, data)  # after every row: an interrupted run keeps what it measured
            logger.info("%s: %s, median query %.1f ms", label, ev.aggregate, 1000 * rows[-1]["query_latency_median_s"])

    markdown = _write(out, data, final=True)
    return RetrievalBenchResult(data, markdown, out / "results.json", out / "results.md", run_paths)


def _write(out: Path, data: dict[str, Any], *, final: bool = False) -> str:
    if final:
        data["finished"] = now()
    save_json(out / "results.json", data)
    markdown = render_markdown(data)
    (out / "results.md").write_text(markdown + "\n", encoding="utf-8")
    return markdown


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.1f}"


def render_markdown(data: Mapping[str, Any]) -> str:
    """The results table (one row per first-stage run / embedder x index kind)."""
    measures = list(data["measures"])
    head = ["first stage", "index", *measures, "encode corpus (s)", "build index (s)",
            "query median (ms)", "query p90 (ms)", "of which FAISS search (ms, median)"]  # fmt: skip
    rows = []
    for row in data["rows"]:
        metrics = [f"{row['metrics'][m]:.4f}" for m in measures]
        if row["kind"] == "run file":
            rows.append([row["label"], "(run file)", *metrics, "", "", "", "", ""])
        else:
            rows.append([
                row["label"], row["factory"], *metrics, f"{row['encode_corpus_s']:.1f}",
                f"{row['index_build_s']:.3f}", _ms(row["query_latency_median_s"]),
                _ms(row["query_latency_p90_s"]), _ms(row["search_only_median_s"]),
            ])  # fmt: skip
    return "\n".join([
        f"{data['dataset']}: {data['documents']} documents, {data['queries']} queries, top {data['k']}",
        "",
        markdown_table(head, rows, align="ll" + "r" * (len(head) - 2)),
        "",
        machine_footer(data.get("machine")),
    ])  # fmt: skip
