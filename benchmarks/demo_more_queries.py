"""Distil the demo on more training queries: does the encoder's LDS on the report block rise?

Writes the demo's 40 training queries and more of each kind (harmful, reasoning, chat), drawn
from what the pool, both query sets and make validate's held-out queries leave
(:func:`influcoder.workflows.demo_data.more_training_queries`), as a JSONL file; then, after
`make demo` and `make validate`:

    python benchmarks/demo_more_queries.py --per-kind 60,13,160 \
        --out runs/demo/data/more_train_queries.jsonl
    influcoder collect runs/demo/data/more_train_queries.jsonl --like runs/demo/grad_pool \
        --out runs/demo/grad_more_queries
    influcoder distill runs/demo/grad_pool runs/demo/grad_more_queries \
        -o runs/demo/encoder_more --epochs 3 --max-seq-length 128 --holdout-fraction 0
    influcoder lds runs/demo/lds/runs runs/demo/grad_pool runs/demo/lds/grad_queries \
        -e distilled=runs/demo/encoder -e more=runs/demo/encoder_more --baselines none \
        --by block,part

The distil settings are the demo's (3 epochs, 128 encoder tokens, no hold-out).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from influcoder.workflows.demo_data import SIZES, more_training_queries, write_jsonl

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-kind", default="60,13,160", help="more queries: harmful,reasoning,chat")
    ap.add_argument("--size", default="small", choices=sorted(SIZES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/demo/data/more_train_queries.jsonl")
    args = ap.parse_args()
    per_kind = tuple(int(n) for n in args.per_kind.split(","))
    if len(per_kind) != 3:
        raise SystemExit("--per-kind takes three counts: harmful,reasoning,chat")
    samples = more_training_queries(SIZES[args.size], per_kind, seed=args.seed)
    write_jsonl(Path(args.out), samples)
    print(f"wrote {args.out}: {len(samples)} training queries")


if __name__ == "__main__":
    main()
