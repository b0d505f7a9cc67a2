"""Distillation learning curve on real models: does more ground truth make a better encoder?

Ground truth (SmolLM2-135M LoRA-gradient cosines, the project's defaults) is collected once
for the largest training size plus a fixed held-out test set (pool samples AND queries that no
encoder trains on). Encoders (all-MiniLM-L6-v2, bundled) are distilled on training ground
truths of growing size (queries x pool) and each is measured on the same held-out test block:
per-anchor, pairwise and aggregated Spearman against the ground truth, next to the untrained
encoder and TF-IDF.

    python benchmarks/learning_curve.py                       # sizes 16x48,32x96,64x192
    python benchmarks/learning_curve.py --sizes 100x200,300x600,1000x2000 --epochs 3

Everything is cached under --work (stores resume, encoders are reused), so a long run can be
stopped and continued.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common


def main() -> None:
    import numpy as np

    from influcoder.arguments import CollectArguments
    from influcoder.baselines import encoder_scores, tfidf_scores
    from influcoder.collect import collect
    from influcoder.demo import CHAT, HARMFUL, REASONING, _samples
    from influcoder.datasets import load_bbh_cot, load_chatterbot, load_harmful, split_disjoint
    from influcoder.data import encoder_text
    from influcoder.distill import DistillArguments, distill
    from influcoder.influence import cosine_scores
    from influcoder.metrics import aggregated_spearman, pairwise_spearman, per_anchor_spearman
    from influcoder.models import load_encoder

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="16x48,32x96,64x192", help="QUERIESxPOOL, comma separated")
    ap.add_argument("--test", default="24x96", help="held-out QUERIESxPOOL")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--work", default="runs/learning_curve")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    tq, tp = (int(x) for x in args.test.split("x"))
    max_q, max_p = max(q for q, _ in sizes), max(p for _, p in sizes)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    # Pool and queries: chat with some harmful and reasoning samples, all disjoint.
    rows = {HARMFUL: load_harmful(), REASONING: load_bbh_cot(), CHAT: load_chatterbot()}
    share = {HARMFUL: 0.1, REASONING: 0.05}
    pools, queries = [], []
    for label in (HARMFUL, REASONING, CHAT):
        n_p = round((max_p + tp) * share[label]) if label in share else None
        n_q = round((max_q + tq) * 0.3) if label != CHAT else None
        if n_p is None:
            n_p = max_p + tp - sum(len(p) for p in pools)
        if n_q is None:
            n_q = max_q + tq - sum(len(q) for q in queries)
        p, rest = split_disjoint(rows[label], n_p, args.seed)
        q, _ = split_disjoint(rest, n_q, args.seed + 1)
        if len(p) < n_p or len(q) < n_q:
            raise SystemExit(f"not enough {label} samples for these sizes")
        pools.append(_samples(p, label))
        queries.append(_samples(q, label))
    rng = np.random.default_rng(args.seed)
    pool = [s for part in pools for s in part]
    query = [s for part in queries for s in part]
    pool = [pool[i] for i in rng.permutation(len(pool))]
    query = [query[i] for i in rng.permutation(len(query))]
    test_pool, train_pool = pool[:tp], pool[tp:]
    test_q, train_q = query[:tq], query[tq:]

    t = time.perf_counter()
    cargs = CollectArguments(max_length=args.max_length, seed=args.seed)
    gp = collect(train_pool, work / "grad_train_pool", cargs)
    gq = collect(train_q, work / "grad_train_queries", like=work / "grad_train_pool")
    gtp = collect(test_pool, work / "grad_test_pool", like=work / "grad_train_pool")
    gtq = collect(test_q, work / "grad_test_queries", like=work / "grad_train_pool")
    collect_seconds = time.perf_counter() - t
    gt_test = cosine_scores(gtp, gtq)

    def figures(pred):
        return {"per-anchor": per_anchor_spearman(gt_test, pred),
                "pairwise": pairwise_spearman(gt_test, pred),
                "aggregated": aggregated_spearman(gt_test, pred)}

    rows_out = [{"method": "TF-IDF", **figures(tfidf_scores(gtp.samples, gtq.samples)[0])},
                {"method": "untrained MiniLM",
                 **figures(encoder_scores("all-minilm-l6-v2", gtp.samples, gtq.samples)[0])}]
    full_gt = cosine_scores(gp, gq)
    for q, p in sizes:
        enc_dir = work / f"encoder_{q}x{p}"
        t = time.perf_counter()
        if not (enc_dir / "influcoder_distill.json").is_file():
            # Distil on the first p pool samples x first q queries of the training ground truth.
            distill(load_encoder("all-minilm-l6-v2"),
                    [encoder_text(s) for s in gp.samples[:p]],
                    [encoder_text(s) for s in gq.samples[:q]], full_gt[:p, :q],
                    DistillArguments(epochs=args.epochs, seed=args.seed), out_dir=enc_dir,
                    extra_card={"ground_truth": {"pool": p, "queries": q}})
        train_seconds = time.perf_counter() - t
        card = json.loads((enc_dir / "influcoder_distill.json").read_text())
        rows_out.append({"method": f"distilled {q}x{p}",
                         **figures(encoder_scores(str(enc_dir), gtp.samples, gtq.samples)[0]),
                         "train s": train_seconds if train_seconds > 1 else None,
                         "best epoch": card.get("best_epoch")})
    print(f"\ntest block: {len(test_pool)} pool x {len(test_q)} queries, never trained on; "
          f"ground truth collected in {collect_seconds:.0f} s")
    print(common.table(rows_out, ["method", "per-anchor", "pairwise", "aggregated", "train s",
                                  "best epoch"]))
    print(f"\nreproduce: {common.command_line()}")
    (work / "results.json").write_text(json.dumps(rows_out, indent=2, default=float))


if __name__ == "__main__":
    main()
