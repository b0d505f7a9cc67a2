#!/usr/bin/env bash
# The causal instrument on the demo (docs/VALIDATION.md, "LDS on the demo"): LDS subset runs
# measured on all 58 demo queries (40 training queries = the validation block, 18 test queries =
# the report block), every method and gradient recipe scored against the same saved runs.
# Needs `make demo` first. Every stage resumes: rerun the script after an interruption, or with
# a larger SUBSETS to add runs to the same store.
# Usage: bash benchmarks/demo_lds.sh [SUBSETS] [WORKERS]
# The recipe stores use collect's default max length (512 tokens; the demo's pool has 256).
set -euo pipefail
cd "$(dirname "$0")/.."
subsets=${1:-128}
workers=${2:-2}
demo=runs/demo
out=$demo/lds
inputs=$demo/lds_inputs   # the query file, its stores and the recipes' stores
bin=.venv/bin
export OMP_NUM_THREADS=1
mkdir -p "$inputs"

# 1. all queries in one file, each marked with its block and its block/kind
$bin/python - "$demo/data" "$inputs/all_queries.jsonl" <<'EOF'
import json, sys
data, out = sys.argv[1:]
with open(out + ".tmp", "w") as f:
    for name, block in (("train_queries", "validation"), ("test_queries", "report")):
        for line in open(f"{data}/{name}.jsonl"):
            row = json.loads(line)
            row.update(block=block, part=f"{block}/{row['label']}")
            f.write(json.dumps(row) + "\n")
import os; os.replace(out + ".tmp", out)
EOF
$bin/influcoder collect "$inputs/all_queries.jsonl" --like $demo/grad_pool \
    --out "$inputs/grad_queries" -q

# 2. the runs: the full pool, the gradient's removal, SUBSETS half-pool subsets (seed 0)
$bin/influcoder validate $demo/grad_pool "$inputs/grad_queries" "$inputs/grad_queries" \
    --where label=harmful --baselines none --seeds 0 --lds-subsets "$subsets" --lds-by part \
    --label-field label --positive harmful --workers "$workers" --out "$out"

# 3. recipes: the same pool and queries collected with each gradient recipe
for recipe in cosine adam last8; do
  case $recipe in
    cosine) opts=() ;;
    adam) opts=(--precondition adam) ;;
    last8) opts=(--lora-layers last:8) ;;
  esac
  $bin/influcoder collect $demo/data/pool.jsonl --out "$inputs/recipes/$recipe/pool" "${opts[@]}" -q
  $bin/influcoder collect "$inputs/all_queries.jsonl" --like "$inputs/recipes/$recipe/pool" \
      --out "$inputs/recipes/$recipe/queries" -q
done

# 4. every method and recipe against the saved runs (seconds), per block and per kind
r=$inputs/recipes
methods=(-e distilled=$demo/encoder -e untrained=all-minilm-l6-v2 --baselines bm25,tfidf,random
         -m cosine=$r/cosine/pool,$r/cosine/queries -m inner=$r/cosine/pool,$r/cosine/queries,inner
         -m adam=$r/adam/pool,$r/adam/queries -m adam-inner=$r/adam/pool,$r/adam/queries,inner
         -m last8=$r/last8/pool,$r/last8/queries)
$bin/influcoder lds "$out/runs" $demo/grad_pool "$inputs/grad_queries" "${methods[@]}" --by block \
    --json "$out/lds_block.json"
$bin/influcoder lds "$out/runs" $demo/grad_pool "$inputs/grad_queries" "${methods[@]}" --by part \
    --json "$out/lds_part.json"
$bin/python benchmarks/lds_tradeoff.py "$out/runs" $demo/grad_pool "$inputs/grad_queries" \
    -e distilled=$demo/encoder --baselines bm25 --by block --counts 8,16,24,32 --draws 5 \
    --n-boot 300 --json "$out/tradeoff.json"
