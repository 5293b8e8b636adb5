#!/usr/bin/env bash
# Issue 18: reciprocal-rank fusion and score interpolation rows derived from committed DL19 records
# (no model runs: `bench` derives a fused method from its recorded unfused twin).
set -eu
cd "$(dirname "$0")/.."
. .venv/bin/activate
D=../shared/data/trec-dl-2019
# the model paths the records were made with (the twin matches on every option, the model included)
Q=$RERANK_QUALITY_LLM; L=$RERANK_QUALITY_LLM_LARGE
derive() {  # SRC OUT "FLAGS" LABEL SPEC
  local src=$1 out=$2 flags=$3 label=$4 spec=$5
  mkdir -p benchmarks/$out; cp benchmarks/$src/results.json benchmarks/$out/results.json
  rerank-plugins bench --candidates $D/bm25_dl19_top100.jsonl --qrels $D/qrels.dl19-passage.txt --rel-level 2 \
    --depth 20 $flags --no-plot --no-progress --out benchmarks/$out \
    --method "$spec,fusion=rrf,label=$label+rrf" --method "$spec,fusion=interpolate,label=$label+interpolate" | grep -E "^\| ($label|first-stage)"
}
derive attention-dl19-top20 fusion-dl19-attention-05b "--doc-max-tokens 256 --bare-forward-queries 3" attention "attention:order=retrieval,layers=4:20,doc_max_tokens=256,model=$Q"
derive attention-dl19-top20-15b fusion-dl19-attention-15b "--doc-max-tokens 256 --bare-forward-queries 1" attention-1.5b "attention:order=retrieval,doc_max_tokens=256,model=$L"
derive dl19-listwise fusion-dl19-first-05b "--doc-max-tokens 256 --bare-forward-queries 10" first-calw "listwise:calibrate=window,model=$Q"
derive dl19-listwise-15b fusion-dl19-first-15b "--doc-max-tokens 256 --limit 10 --no-bare-forward" first-calw-1.5b "listwise:calibrate=window,model=$L"
derive dl19-pointwise-idle fusion-dl19-pointwise-05b "--doc-max-tokens 512 --limit 10 --bare-forward-queries 3" pointwise "pointwise:model=$Q"
derive dl19-pointwise-calibrated fusion-dl19-pointwise-calibrated-05b "--doc-max-tokens 512 --limit 10 --no-bare-forward" pointwise-calibrated "pointwise:calibrate=true,model=$Q"
for s in allpair heapsort sliding; do
  case $s in allpair) o="schedule=allpair,aggregation=soft";; *) o="schedule=$s,k=10,aggregation=soft";; esac
  derive prp-bm25_dl19_top20 fusion-dl19-prp-05b "--doc-max-tokens 256 --limit 10 --no-bare-forward" prp-$s-soft "pairwise:$o,model=$Q"
done
