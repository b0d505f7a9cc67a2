"""Distillation learning curve on real models: does more ground truth make a better encoder?

Ground truth (SmolLM2-135M LoRA-gradient cosines, the project's defaults) is collected once
for the largest training size plus a fixed held-out test set (pool samples AND queries that no
encoder trains on). Encoders (all-MiniLM-L6-v2, bundled) are distilled on training ground
truths of growing size (queries x pool) and each is measured on the same held-out test block:
per-anchor, pairwise and aggregated Spearman against the ground truth, next to the untrained
encoder and TF-IDF.

    python benchmarks/learning_curve.py                       # sizes 16x48,32x96,64x192
    python benchmarks/learning_curve.py --sizes 100x200,300x600,1000x2000 --epochs 3
    python benchmarks/learning_curve.py --sizes 500x1000 --epochs 2 --work runs/more \
        --init runs/learning_curve/encoder_500x1000    # 2 more epochs for a trained encoder

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
    from influcoder.data import encoder_text
    from influcoder.datasets import load_bbh_cot, load_chatterbot, load_harmful, load_rho_qa
    from influcoder.demo import CHAT, HARMFUL, REASONING, _samples
    from influcoder.distill import DistillArguments, distill
    from influcoder.influence import cosine_scores
    from influcoder.metrics import (aggregated_spearman, bootstrap_interval, pairwise_spearman,
                                    per_anchor_spearman)
    from influcoder.models import load_encoder

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="16x48,32x96,64x192", help="QUERIESxPOOL, comma separated")
    ap.add_argument("--test", default="24x96", help="held-out QUERIESxPOOL")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=256, help="decoder tokens per sample")
    ap.add_argument("--encoder-max-length", type=int, default=128,
                    help="encoder tokens per text while distilling")
    ap.add_argument("--batch-pool", type=int, default=32)
    ap.add_argument("--batch-query", type=int, default=32,
                    help="queries per step: a square block trains on 4x the pairs of 32x8 "
                         "for 1.6x the texts encoded")
    ap.add_argument("--hard-fraction", type=float, default=0.0)
    ap.add_argument("--init", default="all-minilm-l6-v2",
                    help="encoder to start from: the bundled MiniLM, or an encoder directory "
                         "distilled before (to train it for more epochs; keep --seed so the "
                         "validation split stays the one it never trained on)")
    ap.add_argument("--work", default="runs/learning_curve")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    tq, tp = (int(x) for x in args.test.split("x"))
    max_q, max_p = max(q for q, _ in sizes), max(p for _, p in sizes)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    # Every sample the demo packages ship (chat, benign QA in four styles, harmful, reasoning),
    # shuffled once; test queries, test pool, training queries and training pool are cut
    # from the front in that order, so a larger size extends a smaller one and no sample is
    # in two parts.
    rows = ([(r, CHAT) for r in load_chatterbot()] + [(r, "qa") for r in load_rho_qa()]
            + [(r, HARMFUL) for r in load_harmful()] + [(r, REASONING) for r in load_bbh_cot()])
    need = tq + tp + max_q + max_p
    if need > len(rows):
        raise SystemExit(f"these sizes need {need} samples; the demo packages ship {len(rows)}")
    order = np.random.default_rng(args.seed).permutation(len(rows))
    samples = [_samples([rows[i][0]], rows[i][1])[0] for i in order[:need]]
    test_q, test_pool = samples[:tq], samples[tq:tq + tp]
    train_q, train_pool = samples[tq + tp:tq + tp + max_q], samples[tq + tp + max_q:]

    t = time.perf_counter()
    cargs = CollectArguments(max_length=args.max_length, seed=args.seed)
    gp = collect(train_pool, work / "grad_train_pool", cargs)
    gq = collect(train_q, work / "grad_train_queries", like=work / "grad_train_pool")
    gtp = collect(test_pool, work / "grad_test_pool", like=work / "grad_train_pool")
    gtq = collect(test_q, work / "grad_test_queries", like=work / "grad_train_pool")
    collect_seconds = time.perf_counter() - t
    gt_test = cosine_scores(gtp, gtq)

    def figures(pred):
        # 95% bootstrap intervals over test pool samples and queries: how much a test block of
        # this size moves the figure, to read it against the targets.
        def interval(fn):
            low, high = bootstrap_interval(fn, gt_test, pred, seed=args.seed)
            return f"[{low:.2f}, {high:.2f}]"

        return {"per-anchor": per_anchor_spearman(gt_test, pred),
                "per-anchor 95%": interval(per_anchor_spearman),
                "pairwise": pairwise_spearman(gt_test, pred),
                "aggregated": aggregated_spearman(gt_test, pred),
                "aggregated 95%": interval(aggregated_spearman)}

    rows_out = [{"method": "TF-IDF", **figures(tfidf_scores(gtp.samples, gtq.samples)[0])},
                {"method": "untrained MiniLM",
                 **figures(encoder_scores("all-minilm-l6-v2", gtp.samples, gtq.samples)[0])}]
    full_gt = cosine_scores(gp, gq)
    for q, p in sizes:
        enc_dir = work / f"encoder_{q}x{p}"
        t = time.perf_counter()
        if not (enc_dir / "influcoder_distill.json").is_file():
            # Distil on the first p pool samples x first q queries of the training ground truth.
            distill(load_encoder(args.init),
                    [encoder_text(s) for s in gp.samples[:p]],
                    [encoder_text(s) for s in gq.samples[:q]], full_gt[:p, :q],
                    DistillArguments(epochs=args.epochs, seed=args.seed,
                                     max_seq_length=args.encoder_max_length,
                                     batch_pool=args.batch_pool, batch_query=args.batch_query,
                                     hard_fraction=args.hard_fraction), out_dir=enc_dir,
                    extra_card={"ground_truth": {"pool": p, "queries": q}, "init": args.init})
        train_seconds = time.perf_counter() - t
        card = json.loads((enc_dir / "influcoder_distill.json").read_text())
        rows_out.append({"method": f"distilled {q}x{p}",
                         **figures(encoder_scores(str(enc_dir), gtp.samples, gtq.samples)[0]),
                         "train s": train_seconds if train_seconds > 1 else None,
                         "best epoch": card.get("best_epoch")})
    print(f"\ntest block: {len(test_pool)} pool x {len(test_q)} queries, never trained on; "
          f"ground truth collected in {collect_seconds:.0f} s")
    print(common.table(rows_out, ["method", "per-anchor", "per-anchor 95%", "pairwise",
                                  "aggregated", "aggregated 95%", "train s", "best epoch"]))
    print(f"\nreproduce: {common.command_line()}")
    (work / "results.json").write_text(json.dumps(rows_out, indent=2, default=float))


if __name__ == "__main__":
    main()
