"""``rerank-plugins index``, ``search`` and ``bench-retrieval``: argument parsers and runners.

Registered in :mod:`rerank_plugins.cli`; the ``add_*`` functions import nothing heavy.

Example:
    $ rerank-plugins index notes/ --embedder ~/.cache/rerank-models/minilm --out notes-index
    $ rerank-plugins search notes-index "how do I rotate the keys?" -k 5
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

__all__ = [
    "BENCH_DESCRIPTION",
    "BENCH_EPILOG",
    "INDEX_DESCRIPTION",
    "SEARCH_DESCRIPTION",
    "add_bench_arguments",
    "add_index_arguments",
    "add_search_arguments",
    "run_bench",
    "run_index",
    "run_search",
]

_KINDS = ["auto", "flat", "hnsw", "ivf", "ivfpq"]

INDEX_DESCRIPTION = """\
Build a FAISS index and save it to a folder (plain files: index.faiss, documents.jsonl,
manifest.json). SOURCE is a folder (every file matching --pattern, default *.txt and *.md,
recursively; id = relative path) or a JSONL file (BEIR corpus layout by default: _id, title, text).
"""

SEARCH_DESCRIPTION = """\
Query a saved index (the embedder named in its manifest is loaded unless --embedder is given).
"""

BENCH_DESCRIPTION = """\
Dense retrieval benchmark on a BEIR folder: for each --embedder, embed the whole corpus once
(timed), build each --kind of FAISS index over the vectors (timed), then run every judged query
one at a time (median/p90 latency of embedding + search, and of the FAISS search alone) and
evaluate the top --k with ir-measures (default nDCG@10, R@100). --baseline-run files (e.g. the
shared BM25 run) are evaluated on the same queries. Each dense ranking is written as a TREC run
(OUT/run.dense-EMBEDDER-KIND.txt) that `rerank-plugins bench --beir ... --run` can rerank.
"""

BENCH_EPILOG = """\
example (BENCHMARKS.md):
  rerank-plugins bench-retrieval --beir ../shared/data/scifact --split test \\
      --embedder "$RERANK_EMBED_MODEL" --embedder "$RERANK_EMBED_MODEL_LARGE" --kind flat --kind hnsw \\
      --baseline-run bm25=../shared/data/scifact/runs/run.bm25.scifact.txt --out bench-out/scifact-dense
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")


def add_index_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``rerank-plugins index``."""
    p.add_argument("source", metavar="SOURCE", help="a folder of text files, or a JSONL file")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to save the index into")
    p.add_argument("--embedder", required=True, metavar="MODEL",
                   help="sentence-transformers hub id or local folder")  # fmt: skip
    p.add_argument("--kind", choices=_KINDS, default="auto", help="index kind (default: %(default)s)")
    p.add_argument("--metric", choices=["ip", "l2"], default="ip", help="similarity (default: %(default)s)")
    p.add_argument("--no-normalize", dest="normalize", action="store_false",
                   help="do not L2-normalise vectors (default: normalise, so ip = cosine)")  # fmt: skip
    p.add_argument("--pattern", dest="patterns", action="append", metavar="GLOB",
                   help="file pattern for a folder SOURCE (repeatable; default: *.txt and *.md)")  # fmt: skip
    p.add_argument("--id-field", default="_id", help="JSONL id field (default: %(default)s)")
    p.add_argument("--text-field", default="text", help="JSONL text field (default: %(default)s)")
    p.add_argument("--title-field", default="title",
                   help="JSONL title field prepended to the text; '' for none (default: %(default)s)")  # fmt: skip
    p.add_argument("--batch-size", type=_positive_int, default=64, help="embedding batch (default: %(default)s)")
    p.add_argument("--device", help="embedder device (default: CUDA when present, else CPU)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: only on a terminal)")  # fmt: skip
    _verbose(p)


def run_index(args: argparse.Namespace) -> int:
    """Build and save an index from a folder or a JSONL file."""
    from rerank_plugins.retrieval import DEFAULT_PATTERNS, get_embedder, index_documents, load_folder, load_jsonl

    src = Path(args.source)
    if src.is_dir():
        docs = load_folder(src, args.patterns or DEFAULT_PATTERNS)
    elif src.is_file():
        docs = load_jsonl(src, id_field=args.id_field, text_field=args.text_field, title_field=args.title_field or None)
    else:
        raise FileNotFoundError(f"{src}: no such folder or file")
    if not docs:
        raise ValueError(f"{src}: no documents found")
    embedder = get_embedder(args.embedder, device=args.device)
    index = index_documents(
        docs, embedder=embedder, kind=args.kind, metric=args.metric, normalize=args.normalize,
        batch_size=args.batch_size, show_progress=args.progress,
    )  # fmt: skip
    out = index.save(args.out)
    print(f"indexed {len(index)} documents from {src} ({index.factory}, dim {index.dimension}) into {out}")
    return 0


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``rerank-plugins search``."""
    p.add_argument("index", metavar="INDEX_DIR", help="a folder written by `rerank-plugins index`")
    p.add_argument("query", help="the query text")
    p.add_argument("-k", type=_positive_int, default=10, help="number of results (default: %(default)s)")
    p.add_argument("--embedder", metavar="MODEL", help="query embedder (default: the one in the manifest)")
    p.add_argument("--json", action="store_true", help="print JSON lines (id, score, text, metadata)")
    _verbose(p)


def run_search(args: argparse.Namespace) -> int:
    """Load a saved index and print the top results for one query."""
    from rerank_plugins.retrieval import FaissIndex

    index = FaissIndex.load(args.index, embedder=args.embedder, check_embedder_name=args.embedder is None)
    for rank, r in enumerate(index.search(args.query, k=args.k), 1):
        if args.json:
            print(json.dumps({"rank": rank, "id": r.id, "score": r.score, "text": r.text, "metadata": r.metadata},
                             ensure_ascii=False))  # fmt: skip
        else:
            snippet = " ".join(r.text.split())[:100]
            print(f"{rank:>3}  {r.score:.4f}  {r.id}  {snippet}")
    return 0


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``rerank-plugins bench-retrieval``."""
    p.add_argument("--beir", required=True, metavar="DIR", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--split", default="test", help="qrels split (default: %(default)s)")
    p.add_argument("--embedder", dest="embedders", action="append", required=True, metavar="MODEL",
                   help="sentence-transformers hub id or folder (repeatable)")  # fmt: skip
    p.add_argument("--kind", dest="kinds", action="append", choices=_KINDS, metavar="KIND",
                   help="index kind: flat, hnsw, ivf, ivfpq, auto (repeatable; default: flat)")  # fmt: skip
    p.add_argument("-k", "--depth", dest="k", type=_positive_int, default=100,
                   help="retrieval depth evaluated and written as a run (default: %(default)s)")  # fmt: skip
    p.add_argument("--measure", dest="measures", action="append", metavar="NAME",
                   help="ir-measures measure (repeatable; default: nDCG@10 and R@100)")  # fmt: skip
    p.add_argument("--baseline-run", dest="baselines", action="append", default=[], metavar="LABEL=FILE",
                   help="a first-stage TREC run evaluated on the same queries (repeatable)")  # fmt: skip
    p.add_argument("--limit", type=_positive_int, metavar="N", help="only the first N judged queries")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="embedding batch (default: %(default)s)")
    p.add_argument("--device", help="embedder device (default: CUDA when present, else CPU)")
    p.add_argument("--out", default="bench-out/retrieval", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: only on a terminal)")  # fmt: skip
    _verbose(p)


def run_bench(args: argparse.Namespace) -> int:
    """Run the dense retrieval benchmark and print its table."""
    from rerank_plugins.retrieval.bench import DEFAULT_MEASURES, run_retrieval_benchmark

    baselines = {}
    for spec in args.baselines:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"--baseline-run expects LABEL=FILE, got {spec!r}")
        baselines[label] = path
    result = run_retrieval_benchmark(
        args.beir, embedders=args.embedders, kinds=args.kinds or ["flat"], split=args.split, k=args.k,
        measures=args.measures or DEFAULT_MEASURES, baseline_runs=baselines, limit=args.limit,
        batch_size=args.batch_size, device=args.device, out_dir=args.out, progress=args.progress,
        command="rerank-plugins " + shlex.join(getattr(args, "argv", [])),
    )  # fmt: skip
    print(result.markdown)
    written = [result.results_path, result.markdown_path, *result.run_paths.values()]
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
