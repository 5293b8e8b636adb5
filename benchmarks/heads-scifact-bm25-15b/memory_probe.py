"""Is the 1.5B's RSS growth on SciFact a leak or retained allocator memory? RSS after each query, before and after malloc_trim."""
import ctypes, gc, json, os, sys, time
import psutil
from rerank_plugins.evaluation.loaders import load_beir, load_trec_run, rerank_queries_from_run
from rerank_plugins.rerankers.attention import AttentionReranker

n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
qids = json.load(open("benchmarks/heads-scifact-bm25-15b/results.json"))["config"]["queries"][:n]
ds = load_beir("../shared/data/scifact", "test")
run = load_trec_run("../shared/data/scifact/runs/run.bm25.scifact.txt")
run = {q: run[q][:20] for q in qids}
queries = rerank_queries_from_run(run, ds.queries, ds.corpus)
libc = ctypes.CDLL("libc.so.6")
proc = psutil.Process()
r = AttentionReranker(model=os.environ["RERANK_QUALITY_LLM_LARGE"], dtype="bfloat16", doc_max_tokens=256,
                      heads="rerank_plugins/rerankers/profiles/qwen2.5-coder-1.5b-instruct.json")
mb = lambda: round(proc.memory_info().rss / 2**20)
print("loaded", mb(), flush=True)
for q in queries:
    t = time.monotonic()
    r.rerank(q.query, [c.text for c in q.candidates])
    before = mb(); gc.collect(); libc.malloc_trim(0); after = mb()
    print(f"q{q.qid} {time.monotonic()-t:.1f}s rss {before} -> trimmed {after} objs {len(gc.get_objects())}", flush=True)
