#!/usr/bin/env bash
# Rerun three committed DL19 records on their first 3 queries (float32, as recorded) and compare rankings.
set -u
cd /work/main
. .venv/bin/activate
D=../shared/data/trec-dl-2019
common="--candidates $D/bm25_dl19_top100.jsonl --qrels $D/qrels.dl19-passage.txt --rel-level 2 --depth 20 --limit 3 --model $RERANK_QUALITY_LLM --dtype float32 --no-bare-forward --no-plot --no-progress"
timeout 1800 rerank-plugins bench $common --doc-max-tokens 512 --method pointwise:calibrate=true,label=pointwise-calibrated --out benchmarks/one-door-rerun/out/pointwise > benchmarks/one-door-rerun/out/pointwise.log 2>&1
timeout 1200 rerank-plugins bench $common --doc-max-tokens 256 --method listwise:calibrate=window,label=first-calw --out benchmarks/one-door-rerun/out/listwise > benchmarks/one-door-rerun/out/listwise.log 2>&1
timeout 1200 rerank-plugins bench $common --doc-max-tokens 256 --method attention:order=retrieval,layers=4:20,doc_max_tokens=256,label=attention --out benchmarks/one-door-rerun/out/attention > benchmarks/one-door-rerun/out/attention.log 2>&1
python3 - <<'PY'
import json
pairs = [("pointwise", "dl19-pointwise-calibrated", "pointwise-calibrated"),
         ("listwise", "dl19-listwise", "first-calw"),
         ("attention", "attention-dl19-top20", "attention")]
for new, old, label in pairs:
    a = json.load(open(f"benchmarks/one-door-rerun/out/{new}/results.json"))["methods"][label]["records"]
    b = json.load(open(f"/work/main/benchmarks/{old}/results.json"))["methods"][label]["records"]
    for qid, rec in a.items():
        same = rec["ranking"] == b[qid]["ranking"]
        print(new, qid, "identical" if same else "DIFFERENT", "scores max abs diff",
              max(abs(x - y) for x, y in zip(rec["scores"], b[qid]["scores"])) if "scores" in b[qid] else "n/a")
PY
