"""RSS of an attention reranker (shipped heads) over SciFact test, BM25 top-20, query by query.

After each of the first N queries (the order of `benchmarks/heads-scifact-bm25-15b`): the seconds, the
RSS, then the RSS after ``gc.collect()`` and glibc ``malloc_trim(0)``, and the Python object count. A
count that stays flat while RSS grows points at native memory, not Python objects; memory that
``malloc_trim`` gives back was freed but kept by the allocator; what stays after it is held. The
oneDNN primitive cache (bfloat16 matmuls on CPU go through oneDNN, one cached primitive per input
shape, ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` entries, 1024 by default) is one such holder: run the probe
with that variable set to compare; so is PyTorch's own cache of oneDNN computations (ideep's,
``LRU_CACHE_CAPACITY``); glibc's ``MALLOC_MMAP_THRESHOLD_`` is the allocator's knob. Linux with glibc
only. ``--bare`` runs transformers' forward pass over the same text instead, without this
package, to tell its memory from the libraries' own.

    python scripts/memory_probe.py 6                        # the 1.5B ($RERANK_QUALITY_LLM_LARGE)
    ONEDNN_PRIMITIVE_CACHE_CAPACITY=64 python scripts/memory_probe.py 12 --model "$RERANK_QUALITY_LLM" \\
        --profile rerank_plugins/rerankers/profiles/qwen2.5-coder-0.5b-instruct.json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import time
import tracemalloc
from collections.abc import Callable

import psutil

from rerank_plugins.evaluation.loaders import load_beir, load_trec_run, rerank_queries_from_run
from rerank_plugins.rerankers.attention import AttentionReranker

RECORD = "benchmarks/heads-scifact-bm25-15b/results.json"
PROFILE = "rerank_plugins/rerankers/profiles/qwen2.5-coder-1.5b-instruct.json"


def bare_forward(model: str, dtype: str, pad_multiple: int = 0) -> Callable[[str, list[str]], object]:
    """transformers alone, no rerank_plugins code: one forward over the query and the passages.

    With ``pad_multiple`` the prompt is right-padded (masked) to the next multiple of that many tokens,
    so that many prompts share a few shapes; a causal model's outputs at the real tokens do not change.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).eval()

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def forward(query: str, documents: list[str]) -> object:
        ids = [tokenizer(query)["input_ids"]]
        ids += [tokenizer(d)["input_ids"][:256] for d in documents]
        flat = [t for part in ids for t in part]
        padding = -len(flat) % pad_multiple if pad_multiple else 0
        inputs = {"input_ids": torch.tensor([flat + [pad_id] * padding])}
        if padding:
            # Without padding no mask is passed, as in the runs that wrote the committed unpadded logs.
            inputs["attention_mask"] = torch.tensor([[1] * len(flat) + [0] * padding])
        with torch.inference_mode():
            return lm(**inputs, logits_to_keep=1).logits

    return forward


def main(
    n_queries: int,
    model: str,
    profile: str,
    trace: bool = False,
    bare: bool = False,
    dtype: str = "bfloat16",
    pad_multiple: int = 0,
) -> None:
    with open(RECORD) as f:
        qids = json.load(f)["config"]["queries"][:n_queries]
    data = load_beir("../shared/data/scifact", "test")
    run = load_trec_run("../shared/data/scifact/runs/run.bm25.scifact.txt")
    queries = rerank_queries_from_run({q: run[q][:20] for q in qids}, data.queries, data.corpus)
    libc = ctypes.CDLL("libc.so.6")
    process = psutil.Process()

    def rss_mb() -> int:
        return round(process.memory_info().rss / 2**20)

    if bare:
        rerank = bare_forward(model, dtype, pad_multiple)
    else:
        reranker = AttentionReranker(model=model, dtype=dtype, doc_max_tokens=256, heads=profile)
        rerank = reranker.rerank
    knobs = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY", "MALLOC_MMAP_THRESHOLD_")
    settings = ", ".join(f"{name}={os.environ.get(name, 'unset')}" for name in knobs)
    kind = "bare forward" + (f", padded to a multiple of {pad_multiple} tokens" if pad_multiple else "")
    print(f"model {model} ({dtype}, {kind if bare else 'attention reranker'}), {settings}", flush=True)
    print("before the first query", rss_mb(), flush=True)
    first_snapshot = None
    for number, query in enumerate(queries, start=1):
        if trace and number == 2:
            # Python-level allocations from the second query on, objects the GC does not track included
            # (strings, bytes, tuples of them), which the object count below misses.
            tracemalloc.start(8)
        start = time.monotonic()
        rerank(query.query, [c.text for c in query.candidates])
        before = rss_mb()
        gc.collect()
        libc.malloc_trim(0)
        print(
            f"q{query.qid} {time.monotonic() - start:.1f}s rss {before} -> trimmed {rss_mb()} "
            f"objs {len(gc.get_objects())}",
            flush=True,
        )
        if trace and number == 2:
            first_snapshot = tracemalloc.take_snapshot()
    if first_snapshot is not None:
        growth = tracemalloc.take_snapshot().compare_to(first_snapshot, "lineno")
        print(f"Python allocations held, after query 2 to the end: {sum(g.size_diff for g in growth) / 2**20:+.1f} MB")
        for stat in growth[:8]:
            print("  ", stat)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("queries", nargs="?", type=int, default=10, help="how many queries (default 10)")
    parser.add_argument("--model", default=os.environ.get("RERANK_QUALITY_LLM_LARGE"), help="a model folder or id")
    parser.add_argument("--profile", default=PROFILE, help="the head profile (default: the 1.5B's)")
    parser.add_argument("--bare", action="store_true", help="transformers' forward alone instead of the reranker")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="weights' dtype")
    parser.add_argument(
        "--pad-multiple", type=int, default=0, help="with --bare: right-pad each prompt to a multiple of N tokens"
    )
    parser.add_argument("--tracemalloc", action="store_true", help="also report Python allocations held, by line")
    args = parser.parse_args()
    if not args.model:
        parser.error("--model is required when RERANK_QUALITY_LLM_LARGE is not set")
    if args.pad_multiple < 0:
        parser.error("--pad-multiple must be 0 (no padding) or a positive number of tokens")
    if args.pad_multiple and not args.bare:
        parser.error("--pad-multiple applies to --bare only")
    main(args.queries, args.model, args.profile, args.tracemalloc, args.bare, args.dtype, args.pad_multiple)
