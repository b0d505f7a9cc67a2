#!/usr/bin/env bash
# The causal instrument on the demo with every gradient recipe (docs/VALIDATION.md, "LDS on the
# demo"): `make validate`'s runs (60 half-pool subsets; 130 queries: the 40 training queries are
# the validation block, the 18 test and 72 held-out queries the report block), then the pool and
# queries collected with each recipe and every method and recipe scored against the same saved
# runs, per block and per kind. Needs `make demo` first. Every stage resumes: rerun the script
# after an interruption.
# Usage: bash benchmarks/demo_lds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
demo=runs/demo
lds=$demo/lds
r=$lds/recipes
bin=.venv/bin
export OMP_NUM_THREADS=1

make validate

# the pool and the queries collected with each recipe (the demo's own stores are the default's)
for recipe in adam kfac last8; do
  case $recipe in
    adam) opts=(--precondition adam) ;;
    kfac) opts=(--precondition kfac) ;;
    last8) opts=(--lora-layers last:8) ;;
  esac
  $bin/influcoder collect $demo/data/pool.jsonl --out "$r/$recipe/pool" --max-length 256 \
      "${opts[@]}" -q
  $bin/influcoder collect $demo/data/lds_queries.jsonl --like "$r/$recipe/pool" \
      --out "$r/$recipe/queries" -q
done

# every method and recipe against the saved runs (seconds), per block and per kind
methods=(-e distilled=$demo/encoder -e untrained=all-minilm-l6-v2 --baselines bm25,tfidf,random
         -m inner=$demo/grad_pool,$lds/grad_queries,inner)
for recipe in adam kfac last8; do
  methods+=(-m "$recipe=$r/$recipe/pool,$r/$recipe/queries")
  methods+=(-m "$recipe-inner=$r/$recipe/pool,$r/$recipe/queries,inner")
done
for by in block part; do
  $bin/influcoder lds "$lds/runs" $demo/grad_pool "$lds/grad_queries" "${methods[@]}" --by $by \
      --json "$lds/recipes_$by.json"
done
$bin/python benchmarks/lds_tradeoff.py "$lds/runs" $demo/grad_pool "$lds/grad_queries" \
    -e distilled=$demo/encoder --baselines bm25 --by block --counts 8,16,32,48,64 --draws 5 \
    --n-boot 300 --json "$lds/tradeoff.json"
