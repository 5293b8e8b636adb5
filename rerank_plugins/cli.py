"""The ``rerank-plugins`` command line: every benchmark and the FAISS index tools.

Subcommands are listed in :data:`SUBCOMMANDS`; adding one means writing an ``add_arguments``
function (fills its argparse parser; imports nothing heavy) and a ``run`` function (takes the
parsed namespace, returns the exit status; imports what it needs), then appending a
:class:`Subcommand`. The benchmarks themselves live in :mod:`rerank_plugins.evaluation`.

Example:
    $ rerank-plugins bench --candidates bm25_dl19_top100.jsonl --qrels qrels.dl19-passage.txt \\
        --depth 20 --rel-level 2 --model ~/.cache/rerank-models/qwen --method pointwise --out bench-out/dl19
    $ rerank-plugins index notes/ --embedder ~/.cache/rerank-models/minilm --out notes-index
    $ rerank-plugins search notes-index "how do I rotate the keys?" -k 5
    $ rerank-plugins select-heads --model ~/.cache/rerank-models/qwen --multihop dev_250.jsonl --out heads.json
    $ rerank-plugins pool-heads heads.json heads.scifact.json --out heads.pooled.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "main"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subcommand:
    """One ``rerank-plugins <name>`` subcommand."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    epilog: str | None = None


# --------------------------------------------------------------------------- bench

_BENCH_DESCRIPTION = """\
Benchmark rerankers on a first-stage run: quality (ir-measures) and cost per query.

Each query's top --depth first-stage candidates are reranked by every --method; the rest stay
below them in first-stage order. Two baselines always run: the first stage itself and the
identity reranker. When a model is involved, the "bare forward" reference is timed: one
forward pass over one prompt holding the query and all reranked passages; each method's
median seconds per query is also given as a ratio to it.

Per method: the measures (default nDCG@10, RR@10, R@10), median and p90 seconds per query,
forward passes, prompt/generated tokens and truncated documents per query (from the scoring
core's counters), the strategy's own counters (reranker.rerank_with_stats), peak CPU RSS of the
process (sampled every 10 ms) and peak CUDA memory on GPU.

Writes OUT/results.json (per-query records, ranked docids included), OUT/results.md and
OUT/ndcg_vs_seconds.png. Rerunning with the same --out resumes: finished (method, query)
pairs are skipped, so an interrupted run (Ctrl-C) loses at most the query in flight.
"""

_BENCH_EPILOG = """\
method specs:
  NAME[:KEY=VALUE,...]   e.g. pointwise, "listwise:mode=first,window=20",
                         "attention:calibrate=false,label=icr-raw"
  values are parsed as int, float, true/false, none, else str (quote to force str; no commas).
  label=... names the result row, so two configurations of one method get two rows.
  --model/--device/--dtype are passed to every method whose factory accepts them, unless the
  spec sets its own.
  fusion=rrf|interpolate (with fusion_k=60, fusion_weight=0.5) fuses the method's ranking with
  the first stage (rerank_plugins.fusion; interpolation uses the run's scores), e.g.
  "attention:fusion=rrf,label=icr-rrf"; a fused method whose unfused twin (same options) is
  in the same results is computed from the twin's recorded scores, without running the model.
  heads=PATH|none|auto picks the attention heads.

examples:
  # TREC DL19, BM25 top-20 reranked by the pointwise strategy (BENCHMARKS.md)
  rerank-plugins bench --candidates ../shared/data/trec-dl-2019/bm25_dl19_top100.jsonl \\
      --qrels ../shared/data/trec-dl-2019/qrels.dl19-passage.txt --rel-level 2 --depth 20 \\
      --model "$RERANK_QUALITY_LLM" --method pointwise --bare-forward-queries 10 --out bench-out/dl19-pointwise
  # BEIR SciFact with its BM25 run, first 50 test queries
  rerank-plugins bench --beir ../shared/data/scifact --split test \\
      --run ../shared/data/scifact/runs/run.bm25.scifact.txt --limit 50 --out bench-out/scifact
"""


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``minimum``, else the error says ``what`` was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _method_spec(text: str) -> object:
    from rerank_plugins.evaluation.bench import parse_method_spec

    try:
        return parse_method_spec(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _verbose(p: argparse._ActionsContainer) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")


def _command(args: argparse.Namespace) -> str:
    """The command line as run, recorded in the results."""
    return "rerank-plugins " + shlex.join(getattr(args, "argv", []))


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("dataset (one of --candidates, --beir, --multihop)")
    src = data.add_mutually_exclusive_group(required=True)
    src.add_argument("--candidates", metavar="FILE",
                     help="RankGPT-style candidates JSONL (one line per query: query, hits[content, docid, qid, "
                          "score]); needs --qrels")
    src.add_argument("--beir", metavar="DIR",
                     help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv); needs --run")
    src.add_argument("--multihop", metavar="FILE",
                     help="HotpotQA/IRCoT JSONL: each question's contexts are its candidates (file order), "
                          "supporting paragraphs are relevant")
    data.add_argument("--run", metavar="FILE", help="first-stage TREC run file (with --beir)")
    data.add_argument("--split", default="test", help="BEIR qrels split (default: %(default)s)")
    data.add_argument("--qrels", metavar="FILE",
                      help="qrels, TREC or BEIR TSV (required with --candidates; overrides the BEIR split)")
    data.add_argument("--name", help="dataset name recorded in the results (default: from the file names)")
    data.add_argument("--skip", type=_non_negative_int, default=0, metavar="S",
                      help="leave out the first S judged queries, in input order (e.g. those a choice was made "
                           "on; default: %(default)s)")
    data.add_argument("--limit", type=_positive_int, metavar="N",
                      help="benchmark only the first N judged queries after --skip, in input order (default: all)")

    rr = p.add_argument_group("reranking")
    rr.add_argument("--depth", type=_positive_int, default=20, metavar="K",
                    help="rerank the top K first-stage candidates of each query (default: %(default)s)")
    rr.add_argument("--method", dest="methods", action="append", type=_method_spec, default=[],
                    metavar="SPEC",
                    help="a method to run, NAME[:KEY=VALUE,...] (repeatable; see below). The baselines "
                         "first-stage and identity always run. Names: identity, pointwise, cross-encoder, "
                         "listwise, pairwise, attention, and any registered through entry points")
    rr.add_argument("--model", metavar="PATH",
                    help="model (hub id, folder, .gguf, or a served model http://HOST:PORT/v1#TOKENIZER) passed "
                         "as model= to every method that takes one; also times the bare-forward reference")
    rr.add_argument("--in-flight", type=_positive_int, default=1, metavar="N",
                    help="queries each method reranks at once (threads); s/q is then each query's latency under "
                         "that load, and the report adds wall seconds per query (default: %(default)s)")
    rr.add_argument("--device", help="device passed to methods that take one (default: CUDA if present, else CPU)")
    rr.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"],
                    help="dtype passed to methods that take one (default auto: bf16 on GPU and on CPUs with AMX or "
                         "AVX512-BF16, else fp32)")

    ev = p.add_argument_group("measures")
    ev.add_argument("--measure", dest="measures", action="append", default=[], metavar="NAME",
                    help="an extra ir-measures measure, e.g. nDCG@5 or R@100 (repeatable); always reported: "
                         "nDCG@10, RR@10, R@10")
    ev.add_argument("--rel-level", type=_positive_int, default=1, metavar="G",
                    help="minimum grade counted relevant by binary measures (RR, R, P); use 2 for TREC DL "
                         "passages (default: %(default)s)")

    bf = p.add_argument_group("bare-forward reference")
    bf.add_argument("--bare-forward-queries", type=_positive_int, metavar="N",
                    help="time the bare forward on the first N queries only (default: all)")
    bf.add_argument("--no-bare-forward", dest="bare_forward", action="store_false",
                    help="do not time the bare-forward reference")
    bf.add_argument("--doc-max-tokens", type=_positive_int, default=512, metavar="T",
                    help="per-passage token budget in the bare-forward prompt (default: %(default)s)")

    out = p.add_argument_group("output")
    out.add_argument("--out", metavar="DIR",
                     help="output folder; an existing results.json there is resumed (default: bench-out/NAME)")
    out.add_argument("--fresh", action="store_true", help="ignore and overwrite an existing results.json")
    out.add_argument("--no-plot", dest="plot", action="store_false", help="do not write the PNG plot")
    out.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="show tqdm progress bars (default: only on a terminal)")
    _verbose(out)


def _load_dataset(args: argparse.Namespace) -> tuple[str, list, dict]:
    from rerank_plugins.evaluation import loaders as L

    if args.candidates:
        if not args.qrels:
            raise ValueError("--candidates needs --qrels")
        if args.run:
            raise ValueError("--run goes with --beir, not --candidates")
        queries = L.load_candidates(args.candidates)
        return Path(args.candidates).stem, queries, L.load_qrels(args.qrels)
    if args.beir:
        if not args.run:
            raise ValueError("--beir needs --run (a first-stage TREC run file)")
        run = L.load_trec_run(args.run)
        ids = {d for docs in run.values() for d, _ in docs}
        ds = L.load_beir(args.beir, split=args.split, ids=ids)
        qrels = L.load_qrels(args.qrels) if args.qrels else ds.qrels
        queries = L.rerank_queries_from_run(run, ds.queries, ds.corpus, run_path=args.run)
        name = f"{Path(args.beir).name}-{args.split}-{Path(args.run).stem}"
        return name, queries, qrels
    if args.run:
        raise ValueError("--run goes with --beir")
    examples = L.load_multihop(args.multihop)
    queries, qrels = L.multihop_to_rerank(examples)
    if args.qrels:
        qrels = L.load_qrels(args.qrels)
    return Path(args.multihop).stem, queries, qrels


def _bench_run(args: argparse.Namespace) -> int:
    from rerank_plugins.evaluation.bench import run_benchmark, with_shared_options
    from rerank_plugins.evaluation.metrics import DEFAULT_MEASURES

    name, queries, qrels = _load_dataset(args)
    name = args.name or name
    shared = {"model": args.model, "device": args.device, "dtype": args.dtype}
    methods = [with_shared_options(m, shared) for m in args.methods]
    measures = list(DEFAULT_MEASURES) + [m for m in args.measures if m not in DEFAULT_MEASURES]
    out = Path(args.out) if args.out else Path("bench-out") / name
    command = _command(args)
    try:
        result = run_benchmark(
            queries, qrels, methods, out_dir=out, depth=args.depth, skip=args.skip, limit=args.limit, dataset=name,
            measures=measures, rel_level=args.rel_level, bare_forward=args.bare_forward,
            bare_forward_queries=args.bare_forward_queries, bare_forward_model=args.model,
            doc_max_tokens=args.doc_max_tokens, fresh=args.fresh, progress=args.progress, plot=args.plot,
            command=command, in_flight=args.in_flight,
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted: results so far are in {out / 'results.json'}; rerun the same command to resume",
              file=sys.stderr)
        return 130
    print(result.markdown)
    written = [result.results_path, result.markdown_path] + ([result.plot_path] if result.plot_path else [])
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


# --------------------------------------------------------------------------- bench-injection

_INJECTION_DESCRIPTION = """\
Prompt-injection benchmark: an off-topic passage is planted among each query's top --depth
candidates at --positions, once plain and once ending in an instruction to rank it first.
Reports the planted passage's mean rank both ways, the injection shift (how many places the
sentence moved it up) and nDCG@10 with and without it. Resumes from OUT/results.json.
"""


def _injection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--candidates", required=True, metavar="FILE",
                   help="RankGPT-style candidates JSONL (query, hits[content, docid, qid, score])")
    p.add_argument("--qrels", required=True, metavar="FILE", help="qrels, TREC or BEIR TSV")
    p.add_argument("--skip", type=int, default=0, metavar="S",
                   help="leave out the first S judged queries (e.g. to report on queries other than those a "
                        "setting was chosen on; default: %(default)s)")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="only the first N judged queries (after --skip)")
    p.add_argument("--depth", type=_positive_int, default=10, metavar="K",
                   help="first-stage candidates per query (default: %(default)s)")
    p.add_argument("--positions", type=lambda t: [int(x) for x in t.split(",")], metavar="P,P,...",
                   help="0-based positions of the planted passage (default: 0, depth/2, depth)")
    p.add_argument("--method", dest="methods", action="append", type=_method_spec, required=True, metavar="SPEC",
                   help="a method, NAME[:KEY=VALUE,...] as for `bench` (repeatable)")
    p.add_argument("--model", metavar="PATH", help="model= for every method that takes one")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help="dtype= for methods")
    p.add_argument("--rel-level", type=_positive_int, default=1, metavar="G",
                   help="minimum relevant grade for binary measures (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (resumed if it holds results)")


def _injection_run(args: argparse.Namespace) -> int:
    from rerank_plugins.evaluation import injection_bench, loaders

    queries = loaders.load_candidates(args.candidates)
    qrels = loaders.load_qrels(args.qrels)
    if args.skip < 0:
        raise ValueError(f"--skip must be >= 0, got {args.skip}")
    judged = [q for q in queries if q.qid in qrels]
    queries = judged[args.skip :][: args.limit]
    data = injection_bench.run(
        queries, qrels, args.methods, args.out, depth=args.depth, positions=args.positions,
        rel_level=args.rel_level, shared_options={"model": args.model, "dtype": args.dtype},
        dataset=Path(args.candidates).stem, command=_command(args),
    )
    print(injection_bench.render_markdown(data))
    return 0


# --------------------------------------------------------------------------- FAISS: index, search, bench-retrieval

_KINDS = ["auto", "flat", "hnsw", "ivf", "ivfpq"]

_INDEX_DESCRIPTION = """\
Build a FAISS index and save it to a folder (plain files: index.faiss, documents.jsonl,
manifest.json). SOURCE is a folder (every file matching --pattern, default *.txt and *.md,
recursively; id = relative path) or a JSONL file (BEIR corpus layout by default: _id, title, text).
"""

_SEARCH_DESCRIPTION = """\
Query a saved index (the embedder named in its manifest is loaded unless --embedder is given).
"""

_RETRIEVAL_DESCRIPTION = """\
Dense retrieval benchmark on a BEIR folder: for each --embedder, embed the whole corpus once
(timed), build each --kind of FAISS index over the vectors (timed), then run every judged query
one at a time (median/p90 latency of embedding + search, and of the FAISS search alone) and
evaluate the top --k with ir-measures (default nDCG@10, R@100). --baseline-run files (e.g. the
shared BM25 run) are evaluated on the same queries. Each dense ranking is written as a TREC run
(OUT/run.dense-EMBEDDER-KIND.txt) that `rerank-plugins bench --beir ... --run` can rerank.
"""

_RETRIEVAL_EPILOG = """\
example (BENCHMARKS.md):
  rerank-plugins bench-retrieval --beir ../shared/data/scifact --split test \\
      --embedder "$RERANK_EMBED_MODEL" --embedder "$RERANK_EMBED_MODEL_LARGE" --kind flat --kind hnsw \\
      --baseline-run bm25=../shared/data/scifact/runs/run.bm25.scifact.txt --out bench-out/scifact-dense
"""


def _index_arguments(p: argparse.ArgumentParser) -> None:
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


def _index_run(args: argparse.Namespace) -> int:
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


def _search_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``rerank-plugins search``."""
    p.add_argument("index", metavar="INDEX_DIR", help="a folder written by `rerank-plugins index`")
    p.add_argument("query", help="the query text")
    p.add_argument("-k", type=_positive_int, default=10, help="number of results (default: %(default)s)")
    p.add_argument("--embedder", metavar="MODEL", help="query embedder (default: the one in the manifest)")
    p.add_argument("--json", action="store_true", help="print JSON lines (id, score, text, metadata)")
    _verbose(p)


def _search_run(args: argparse.Namespace) -> int:
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


def _retrieval_arguments(p: argparse.ArgumentParser) -> None:
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


def _retrieval_run(args: argparse.Namespace) -> int:
    """Run the dense retrieval benchmark and print its table."""
    from rerank_plugins.evaluation.retrieval_bench import DEFAULT_MEASURES, run_retrieval_benchmark

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
        command=_command(args),
    )  # fmt: skip
    print(result.markdown)
    written = [result.results_path, result.markdown_path, *result.run_paths.values()]
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


# --------------------------------------------------------------------------- bench-decomposition

_DECOMPOSITION_DESCRIPTION = """\
Query decomposition benchmark on HotpotQA: does pooled retrieval find both supporting paragraphs?
One flat FAISS index over every paragraph of the questions; per question four pipelines: dense
(the question's top --k), dense+rerank (its top --rerank-depth reranked), decomp+pooled (the
question and the sub-questions --llm writes, top --k each, reciprocal rank fusion) and
decomp+pooled+rerank (the first --rerank-depth of that pool reranked against the question).
Reports both@5, both@10 (both supporting paragraphs in the top 5 / 10), R@10, both@depth of the
list handed to the reranker, and seconds per question. Writes OUT/results.json (checkpointed
after every stage and batch; a rerun with the same --out resumes) and OUT/results.md.
"""

_DECOMPOSITION_EPILOG = """\
example (BENCHMARKS.md, "Issue 9"):
  rerank-plugins bench-decomposition --embedder "$RERANK_EMBED_MODEL" --llm "$RERANK_QUALITY_LLM" \\
      --reranker "attention:layers=4:20" --doc-max-tokens 128 --k 10 --rerank-depth 15 --rerank-limit 250 \\
      --max-subquestions 2 --max-new-tokens 64 --time-budget 1500 --out bench-out/hotpotqa-decomposition-attention
"""


def _decomposition_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="FILE",
                   help="HotpotQA/IRCoT JSONL (default: the shared data's hotpotqa/dev_250.jsonl)")
    p.add_argument("--embedder", metavar="MODEL",
                   help="sentence-transformers folder or hub id for the index (default: $RERANK_EMBED_MODEL)")
    p.add_argument("--llm", metavar="MODEL",
                   help="the decomposer's model, folder or hub id (default: $RERANK_QUALITY_LLM)")
    p.add_argument("--reranker", type=_method_spec, default="pointwise", metavar="SPEC",
                   help="NAME[:KEY=VALUE,...] as for `bench --method`, e.g. attention:layers=4:20 "
                        "(default: %(default)s)")
    p.add_argument("--reranker-model", metavar="MODEL", help="model for the reranker (default: --llm)")
    p.add_argument("--k", type=_positive_int, default=10,
                   help="documents per query, and the dense list's length (default: %(default)s)")
    p.add_argument("--rerank-depth", type=_positive_int, default=20,
                   help="documents handed to the reranker (default: %(default)s)")
    p.add_argument("--questions", type=_positive_int, metavar="N", help="use the first N questions (default: all)")
    p.add_argument("--limit", type=_non_negative_int, metavar="N", help="decompose at most N questions (default: all)")
    p.add_argument("--rerank-limit", type=_non_negative_int, default=40, metavar="N",
                   help="rerank rows on the first N questions (default: %(default)s)")
    p.add_argument("--gen-batch", type=_positive_int, default=1, metavar="N",
                   help="questions per batched generation (default: %(default)s)")
    p.add_argument("--doc-max-tokens", type=_positive_int, default=128, metavar="T",
                   help="the reranker's per-paragraph token budget (default: %(default)s)")
    p.add_argument("--max-subquestions", type=_positive_int, default=3, metavar="N",
                   help="sub-questions per question at most (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=64, metavar="N",
                   help="the decomposer's generation budget (default: %(default)s)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="start no new question batch after this many seconds (default: none)")
    p.add_argument("--out", default="bench-out/hotpotqa-decomposition", metavar="DIR",
                   help="output folder, resumed if it holds results (default: %(default)s)")
    _verbose(p)


def _decomposition_run(args: argparse.Namespace) -> int:
    from rerank_plugins import registry
    from rerank_plugins.evaluation import decomposition_bench
    from rerank_plugins.evaluation.bench import with_shared_options
    from rerank_plugins.evaluation.loaders import default_data_dir, load_multihop

    embedder = args.embedder or os.environ.get("RERANK_EMBED_MODEL")
    llm = args.llm or os.environ.get("RERANK_QUALITY_LLM")
    if not embedder or not llm:
        raise ValueError("--embedder and --llm are required (or set RERANK_EMBED_MODEL / RERANK_QUALITY_LLM)")
    examples = load_multihop(args.data or default_data_dir() / "hotpotqa" / "dev_250.jsonl")
    if args.questions:
        examples = examples[: args.questions]
    spec = with_shared_options(args.reranker, {"model": args.reranker_model or llm,
                                               "doc_max_tokens": args.doc_max_tokens})  # fmt: skip
    data = decomposition_bench.run(
        examples, embedder=embedder, llm=llm, reranker=registry.create(spec.name, **spec.options),
        out=Path(args.out), k=args.k, rerank_depth=args.rerank_depth, limit=args.limit,
        rerank_limit=args.rerank_limit, gen_batch=args.gen_batch, max_subquestions=args.max_subquestions,
        max_new_tokens=args.max_new_tokens, time_budget=args.time_budget, command=_command(args),
    )  # fmt: skip
    print(decomposition_bench.report(data))
    print(f"wrote {Path(args.out) / 'results.json'}, {Path(args.out) / 'results.md'}")
    return 0


# --------------------------------------------------------------------------- select-heads

_SELECT_HEADS_DESCRIPTION = """\
Choose the retrieval heads of a model for the attention strategy and write a head profile.

Each judged query's top --depth first-stage candidates go into one attention prompt (as the
attention strategy builds it); every (layer, head) ranks them by its calibrated query-to-document
attention, and --metric (nDCG@10 by default) scores that ranking against the qrels. A head's
score is its mean over the queries; the best --n-heads are kept. The profile (JSON) records the
model's identity, the chosen heads with their scores, every head's score, the query ids used and
how they were chosen. Put it in rerank_plugins/rerankers/profiles/ to ship it (heads="auto"
picks it for that model), or pass it as heads=PATH.

Queries: the judged queries of the data in input order, after --skip, the first --limit. Choose
heads on queries that are never reported as test results (e.g. SciFact's train split, or
questions a benchmark leaves out with its own --skip/--limit).
"""

_SELECT_HEADS_EPILOG = """\
examples:
  # SciFact train queries, dense MiniLM top-20 as the first stage
  rerank-plugins select-heads --model "$RERANK_QUALITY_LLM" --beir ../shared/data/scifact --split train \\
      --dense "$RERANK_EMBED_MODEL" --depth 20 --n-heads 8 --out profiles/qwen2.5-coder-0.5b.scifact.json
  # HotpotQA questions 1-250: each question's 10 paragraphs, the 2 supporting ones relevant
  rerank-plugins select-heads --model "$RERANK_QUALITY_LLM" --multihop ../shared/data/hotpotqa/dev_250.jsonl \\
      --limit 250 --n-heads 8 --out profiles/qwen2.5-coder-0.5b.hotpotqa.json
"""


def _select_heads_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("judged queries (one of --candidates, --beir, --multihop)")
    src = data.add_mutually_exclusive_group(required=True)
    src.add_argument("--candidates", metavar="FILE",
                     help="RankGPT-style candidates JSONL (query, hits[content, docid, qid, score]); needs --qrels")
    src.add_argument("--beir", metavar="DIR",
                     help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv); needs --run or --dense")
    src.add_argument("--multihop", metavar="FILE",
                     help="HotpotQA/IRCoT JSONL: each question's contexts are its candidates, supporting ones relevant")
    first = data.add_mutually_exclusive_group()
    first.add_argument("--run", metavar="FILE", help="first-stage TREC run file (with --beir)")
    first.add_argument("--dense", metavar="EMBEDDER",
                       help="first stage built here (with --beir): a sentence-transformers model embeds the whole "
                            "corpus into a flat FAISS index and retrieves --depth candidates per query")
    data.add_argument("--split", default="train", help="BEIR qrels split (default: %(default)s)")
    data.add_argument("--qrels", metavar="FILE",
                      help="qrels, TREC or BEIR TSV (required with --candidates; overrides the BEIR split's)")
    data.add_argument("--skip", type=_non_negative_int, default=0, metavar="S",
                      help="leave out the first S judged queries (default: %(default)s)")
    data.add_argument("--limit", type=_positive_int, metavar="N",
                      help="use N judged queries after --skip (default: all)")
    data.add_argument("--depth", type=_positive_int, default=20, metavar="K",
                      help="first-stage candidates per query, all in one prompt (default: %(default)s)")
    data.add_argument("--save-run", metavar="FILE", help="write the --dense first stage as a TREC run file")

    sel = p.add_argument_group("selection")
    sel.add_argument("--model", required=True, metavar="PATH", help="the model (hub id, folder or .gguf)")
    sel.add_argument("--device", help="device (default: CUDA if present, else CPU)")
    sel.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help="weights' dtype")
    sel.add_argument("--n-heads", type=_positive_int, default=8, metavar="N",
                     help="heads to keep (default: %(default)s)")
    sel.add_argument("--metric", default="ndcg@10",
                     help="per-query score of a head's ranking: ndcg@K or rank (default: %(default)s)")
    sel.add_argument("--rel-level", type=_positive_int, default=1, metavar="G",
                     help="lowest grade counted relevant (default: %(default)s)")
    sel.add_argument("--prompt", choices=["retrieval", "qa"], default="retrieval",
                     help="the attention prompt (default: %(default)s)")
    sel.add_argument("--order", choices=["retrieval", "reversed"], default="retrieval",
                     help="document order in the prompt (default: %(default)s)")
    sel.add_argument("--doc-max-tokens", type=_positive_int, default=256, metavar="T",
                     help="per-document token budget (default: %(default)s)")
    sel.add_argument("--out", required=True, metavar="FILE", help="the head profile to write (JSON)")
    sel.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bar (default: only on a terminal)")
    _verbose(sel)


def _selection_queries(args: argparse.Namespace) -> tuple[str, list, dict, str]:
    """(dataset name, judged queries after --skip/--limit with their candidates, qrels, first stage)."""
    from rerank_plugins.evaluation import loaders as L

    if args.beir and args.dense:
        if args.qrels:
            raise ValueError("--qrels does not go with --dense (the split's qrels choose the queries)")
        ds = L.load_beir(args.beir, split=args.split)
        qids = list(ds.queries)[args.skip :][: args.limit]
        if not qids:
            raise ValueError("no judged query left after --skip/--limit")
        from rerank_plugins.retrieval import FaissIndex, get_embedder

        index = FaissIndex.build(list(ds.corpus.values()), ids=list(ds.corpus), kind="flat", device="cpu",
                                 embedder=get_embedder(args.dense, device=args.device), show_progress=args.progress)
        found = index.search_batch([ds.queries[q] for q in qids], k=args.depth)
        queries = [
            L.RerankQuery(q, ds.queries[q], tuple(L.Candidate(r.id, r.text, r.score) for r in res))
            for q, res in zip(qids, found, strict=True)
        ]
        if args.save_run:
            from rerank_plugins.evaluation.retrieval_bench import write_trec_run

            write_trec_run(Path(args.save_run), {q.qid: [(c.docid, c.score) for c in q.candidates] for q in queries},
                           f"dense-{Path(args.dense).name}")
        return f"{Path(args.beir).name}-{args.split}", queries, ds.qrels, f"dense {args.dense} (flat FAISS, ip)"
    if args.save_run:
        raise ValueError("--save-run goes with --dense")
    if args.dense:
        raise ValueError("--dense goes with --beir")
    name, queries, qrels = _load_dataset(args)
    judged = [q for q in queries if q.qid in qrels][args.skip :][: args.limit]
    if not judged:
        raise ValueError("no judged query left after --skip/--limit")
    stage = f"run {args.run}" if args.run else "the file's candidate order"
    return name, judged, qrels, stage


def _select_heads_run(args: argparse.Namespace) -> int:
    from rerank_plugins.rerankers.head_selection import JudgedQuery, select_heads
    from rerank_plugins.scoring import get_core

    if args.beir and not (args.run or args.dense):
        raise ValueError("--beir needs --run or --dense (the first stage)")
    name, queries, qrels, stage = _selection_queries(args)
    judged = []
    for q in queries:
        top = q.candidates[: args.depth]
        if top:
            grades = tuple(int(qrels[q.qid].get(c.docid, 0)) for c in top)
            judged.append(JudgedQuery(q.qid, q.query, tuple(c.text for c in top), grades))
    data = {
        "dataset": name,
        "source": args.candidates or args.beir or args.multihop,
        "split": args.split if args.beir else None,
        "qrels": args.qrels,
        "first_stage": stage,
        "depth": args.depth,
        "skip": args.skip,
        "limit": args.limit,
    }
    core = get_core(args.model, device=args.device, dtype=args.dtype)
    profile = select_heads(
        core, judged, n_heads=args.n_heads, metric=args.metric, rel_level=args.rel_level, data=data,
        progress=args.progress, prompt=args.prompt, order=args.order, doc_max_tokens=args.doc_max_tokens,
    )
    profile.selection["command"] = _command(args)
    out = profile.save(args.out)
    sel = profile.selection
    print(f"{profile.model.get('name')}: {sel['queries']} queries ({sel['queries_without_relevant']} without a "
          f"relevant candidate left out), {sel['seconds']} s; {args.metric} of every head summed: "
          f"{sel['all_heads_score']}")
    for h in profile.heads:
        print(f"  layer {h.layer:>3}  head {h.head:>3}  {args.metric} {h.score:.4f}")
    print(f"wrote {out}")
    return 0


_POOL_HEADS_DESCRIPTION = """\
Choose heads on the queries of several select-heads runs at once, without the model: each head's
score is its mean over all their queries (each profile's every-head scores weighted by its number
of queries), and the best --n-heads are kept. The profiles must come from the same model, metric
and attention settings (prompt, order, doc-max-tokens...). The pooled profile records each source's
selection (data, query ids, command).
"""

_POOL_HEADS_EPILOG = """\
example:
  rerank-plugins pool-heads heads.scifact-train.json heads.hotpotqa-51-200.json --n-heads 8 --out heads.pooled.json
"""


def _pool_heads_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("profiles", nargs="+", metavar="PROFILE", help="head profiles written by select-heads (two or more)")
    p.add_argument("--n-heads", type=_positive_int, default=8, metavar="N", help="heads to keep (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="FILE", help="the pooled head profile to write (JSON)")


def _pool_heads_run(args: argparse.Namespace) -> int:
    from rerank_plugins.rerankers.head_selection import pool_profiles
    from rerank_plugins.rerankers.heads import HeadProfile

    profile = pool_profiles([HeadProfile.load(p) for p in args.profiles], n_heads=args.n_heads)
    profile.selection["command"] = _command(args)
    out = profile.save(args.out)
    sel = profile.selection
    print(f"{profile.model.get('name')}: {sel['queries']} queries from {len(args.profiles)} selections; "
          f"{sel['metric']} of every head summed: {sel['all_heads_score']}")
    for h in profile.heads:
        print(f"  layer {h.layer:>3}  head {h.head:>3}  {sel['metric']} {h.score:.4f}")
    print(f"wrote {out}")
    return 0


_COMPARE_DESCRIPTION = """\
Compare the per-query rankings of two `rerank-plugins bench` runs of the same queries (float32
against bfloat16, in-process against served, before against after a change): for each method
pair, how many queries have an identical reranked top-K, top-10 and top-5, the mean Kendall tau
between the two orders, and the largest score difference of one document.

With judgments (--qrels, or --beir for a BEIR folder's split), a second table compares one
measure (--measure, default nDCG@10) query by query: the mean of each run, the mean difference
with its 95% interval, how many queries the second run ranks better, equally or worse, and a
paired t-test. The same file may be given twice to compare two of its methods, or a method with
its first stage: --pair first-stage=attention-heads.
"""


def _compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("first", metavar="RESULTS", help="a results.json (or its folder)")
    p.add_argument("second", metavar="OTHER", help="the results.json (or folder) to compare with")
    p.add_argument("--pair", action="append", metavar="LABEL[=OTHER_LABEL]", default=None,
                   help="methods to compare (repeatable); default: every method label the two share")
    judged = p.add_argument_group("quality, query by query (needs judgments)")
    src = judged.add_mutually_exclusive_group()
    src.add_argument("--qrels", metavar="FILE", help="qrels, TREC or BEIR TSV")
    src.add_argument("--beir", metavar="DIR", help="a BEIR folder: its qrels/SPLIT.tsv")
    judged.add_argument("--split", help="BEIR qrels split, with --beir (default: test)")
    judged.add_argument("--measure", metavar="NAME", help="ir-measures measure (default: nDCG@10)")
    judged.add_argument("--rel-level", type=_positive_int, default=None, metavar="G",
                        help="minimum relevant grade for binary measures (default: the first run's)")


def _compare_run(args: argparse.Namespace) -> int:
    from rerank_plugins.evaluation.compare import compare_results, load_results, render_comparison

    a, b = load_results(args.first), load_results(args.second)
    pairs = None
    if args.pair:
        pairs = [tuple(p.split("=", 1)) if "=" in p else (p, p) for p in args.pair]
    quality = _compare_quality(args, a, b, pairs)  # checked before anything is printed
    rows = compare_results(a, b, pairs=pairs)
    if not rows:
        raise ValueError("the two runs share no method label; name the pairs with --pair LABEL=OTHER_LABEL")
    print(render_comparison(rows, a["config"].get("depth")))
    if quality is not None:
        from rerank_plugins.evaluation.compare import render_paired_quality

        print()
        print(render_paired_quality(quality))
    return 0


def _compare_quality(
    args: argparse.Namespace, a: dict[str, Any], b: dict[str, Any], pairs: list[tuple[str, str]] | None
) -> list[dict[str, Any]] | None:
    """The paired quality rows of `compare`, or None without judgments."""
    if not (args.qrels or args.beir):
        if args.measure or args.rel_level or args.split:
            raise ValueError("--measure, --rel-level and --split need judgments: --qrels FILE or --beir DIR")
        return None
    if args.qrels and args.split:
        raise ValueError("--split picks a BEIR folder's qrels (--beir); --qrels names the file itself")
    from rerank_plugins.evaluation import loaders
    from rerank_plugins.evaluation.compare import paired_quality

    path = Path(args.qrels) if args.qrels else loaders.beir_qrels_path(args.beir, args.split or "test")
    if not path.is_file():
        raise FileNotFoundError(f"no qrels at {path}")
    levels = {d["config"].get("rel_level", 1) for d in (a, b)}
    if args.rel_level is None and len(levels) > 1:
        raise ValueError(f"the runs were measured with different --rel-level ({sorted(levels)}); pass --rel-level")
    rel_level = args.rel_level or levels.pop()
    return paired_quality(a, b, loaders.load_qrels(path), pairs=pairs, measure=args.measure or "nDCG@10",
                          rel_level=rel_level)  # fmt: skip


# --------------------------------------------------------------------------- registry and entry point

SUBCOMMANDS: list[Subcommand] = [
    Subcommand(
        name="bench",
        help="benchmark rerankers on a first-stage run (quality and cost per query)",
        description=_BENCH_DESCRIPTION,
        add_arguments=_bench_arguments,
        run=_bench_run,
        epilog=_BENCH_EPILOG,
    ),
]

SUBCOMMANDS += [
    Subcommand("index", "build a FAISS index from a folder of texts or a JSONL file, and save it",
               _INDEX_DESCRIPTION, _index_arguments, _index_run),
    Subcommand("search", "query a saved FAISS index", _SEARCH_DESCRIPTION, _search_arguments, _search_run),
    Subcommand("bench-retrieval", "dense retrieval benchmark (FAISS) on a BEIR folder",
               _RETRIEVAL_DESCRIPTION, _retrieval_arguments, _retrieval_run, epilog=_RETRIEVAL_EPILOG),
    Subcommand("bench-injection", "prompt-injection benchmark: how far an instruction inside a document moves it",
               _INJECTION_DESCRIPTION, _injection_arguments, _injection_run),
    Subcommand("bench-decomposition", "query decomposition benchmark on HotpotQA (pooled retrieval, reranking)",
               _DECOMPOSITION_DESCRIPTION, _decomposition_arguments, _decomposition_run,
               epilog=_DECOMPOSITION_EPILOG),
    Subcommand("select-heads", "choose the retrieval heads of a model for attention reranking (a head profile)",
               _SELECT_HEADS_DESCRIPTION, _select_heads_arguments, _select_heads_run, epilog=_SELECT_HEADS_EPILOG),
    Subcommand("pool-heads", "choose heads on several select-heads runs' queries at once (no model needed)",
               _POOL_HEADS_DESCRIPTION, _pool_heads_arguments, _pool_heads_run, epilog=_POOL_HEADS_EPILOG),
    Subcommand("compare", "how far the rankings of two benchmark runs agree, query by query",
               _COMPARE_DESCRIPTION, _compare_arguments, _compare_run),
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one subparser per entry of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="rerank-plugins", description="LLM rerankers over one shared model: tools."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in SUBCOMMANDS:
        p = sub.add_parser(
            cmd.name, help=cmd.help, description=cmd.description,
            epilog=cmd.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``rerank-plugins`` with ``argv`` (default: the process arguments); returns the exit status.

    Example:
        >>> main(["bench", "--help"])  # doctest: +SKIP
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    level = {0: logging.WARNING, 1: logging.INFO}.get(getattr(args, "verbose", 0), logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A served model's failures (dead server, timeout) are the user's to fix, like a missing file:
    # one line naming the server, not a traceback.
    from rerank_plugins.scoring.served.client import ServedModelError

    try:
        return int(args._run(args))
    except (ValueError, FileNotFoundError, ImportError, ServedModelError) as e:
        print(f"rerank-plugins {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
