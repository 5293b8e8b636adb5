"""The ``rerank-plugins`` command line.

Subcommands are listed in :data:`SUBCOMMANDS`; adding one means writing an ``add_arguments``
function (fills its argparse parser; imports nothing heavy) and a ``run`` function (takes the
parsed namespace, returns the exit status; imports what it needs), then appending a
:class:`Subcommand`.

Example:
    $ rerank-plugins bench --candidates bm25_dl19_top100.jsonl --qrels qrels.dl19-passage.txt \\
        --depth 20 --rel-level 2 --model ~/.cache/rerank-models/qwen --method pointwise --out bench-out/dl19
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rerank_plugins.retrieval import cli as _retrieval_cli

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
core's counters), the strategy's own counters (reranker.last_stats), peak CPU RSS of the
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

examples:
  # TREC DL19, BM25 top-20 reranked by the pointwise strategy (BENCHMARKS.md)
  rerank-plugins bench --candidates ../shared/data/trec-dl-2019/bm25_dl19_top100.jsonl \\
      --qrels ../shared/data/trec-dl-2019/qrels.dl19-passage.txt --rel-level 2 --depth 20 \\
      --model "$RERANK_QUALITY_LLM" --method pointwise --bare-forward-queries 10 --out bench-out/dl19-pointwise
  # BEIR SciFact with its BM25 run, first 50 test queries
  rerank-plugins bench --beir ../shared/data/scifact --split test \\
      --run ../shared/data/scifact/runs/run.bm25.scifact.txt --limit 50 --out bench-out/scifact
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _method_spec(text: str) -> object:
    from rerank_plugins.evaluation.bench import parse_method_spec

    try:
        return parse_method_spec(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
    data.add_argument("--limit", type=_positive_int, metavar="N",
                      help="benchmark only the first N judged queries, in input order (default: all)")

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
                    help="dtype passed to methods that take one (default: bf16 on GPU, fp32 on CPU)")

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
    out.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")


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
    command = "rerank-plugins " + shlex.join(args.argv)
    try:
        result = run_benchmark(
            queries, qrels, methods, out_dir=out, depth=args.depth, limit=args.limit, dataset=name,
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
        dataset=Path(args.candidates).stem, command="rerank-plugins " + shlex.join(args.argv),
    )
    print(injection_bench.render_markdown(data))
    return 0


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

# FAISS retrieval (rerank_plugins/retrieval/cli.py holds the parsers and runners)
SUBCOMMANDS += [
    Subcommand("index", "build a FAISS index from a folder of texts or a JSONL file, and save it",
               _retrieval_cli.INDEX_DESCRIPTION, _retrieval_cli.add_index_arguments, _retrieval_cli.run_index),
    Subcommand("search", "query a saved FAISS index", _retrieval_cli.SEARCH_DESCRIPTION,
               _retrieval_cli.add_search_arguments, _retrieval_cli.run_search),
    Subcommand("bench-retrieval", "dense retrieval benchmark (FAISS) on a BEIR folder",
               _retrieval_cli.BENCH_DESCRIPTION, _retrieval_cli.add_bench_arguments, _retrieval_cli.run_bench,
               epilog=_retrieval_cli.BENCH_EPILOG),
    Subcommand("bench-injection", "prompt-injection benchmark: how far an instruction inside a document moves it",
               _INJECTION_DESCRIPTION, _injection_arguments, _injection_run),
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
    try:
        return int(args._run(args))
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"rerank-plugins {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
