"""``distill --views`` end to end on the learning curve's stores: one view against two.

For each encoder (the bundled MiniLM and any ``--encoder DIR``, e.g. one the learning curve
fine-tuned) the distill stage runs with no further training (``--epochs 0``) on the training
stores, once per ``--views`` choice, and writes an encoder directory (plain or multi-view).
That directory is then scored as a user would get it, through ``evaluate``'s encoder method
(:func:`influcoder.evaluation.baselines.encoder_scores`: the float32 torch backend, every
view), on both held-out blocks together (pool and queries never fitted on): per-anchor,
pairwise and aggregated Spearman against the gradient cosines, with bootstrap intervals for
per-anchor. ``auto``'s row says which views its cross-validation kept. The encoding time of
the held-out samples is measured in the same process, as a ratio to the one-view encoder's:
the second view's price at query time.

    python benchmarks/views_head.py --work runs/lc \
        --encoder runs/lc/encoder_500x1000_q64_lr0.0002_4436e0bfb7
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common
import numpy as np

CHOICES = ("text", "text+response", "auto")


def main() -> None:
    import torch

    from influcoder import metrics
    from influcoder.distillation.settings import DistillArguments
    from influcoder.distillation.stores import distill_stores
    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.views import sample_encoder
    from influcoder.evaluation.baselines import encoder_scores
    from influcoder.io.stores import open_store
    from influcoder.similarity import cosine_matrix

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/lc", help="the learning curve's --work")
    ap.add_argument("--encoder", action="append", default=[], help="more encoders (repeatable)")
    ap.add_argument("--out", default=None, help="where the encoders go (default: WORK/views)")
    ap.add_argument("--views", default=",".join(CHOICES), help="comma-separated --views choices")
    ap.add_argument(
        "--score",
        action="append",
        default=[],
        metavar="DIR",
        help="an encoder directory distill already wrote (e.g. trained with --views "
        "text+response): scored as it is (repeatable)",
    )
    ap.add_argument("--max-seq-length", type=int, default=256, help="encoder tokens per text")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    out = Path(args.out or work / "views")
    train = {p: open_store(work / f"grad_train_{p}") for p in ("pool", "queries")}
    held = {
        p: [open_store(work / f"grad_{b}_{p}") for b in ("test", "extra")]
        for p in ("pool", "queries")
    }
    samples = {p: [s for store in stores for s in store.samples] for p, stores in held.items()}
    gt = cosine_matrix(
        np.vstack([s.vectors() for s in held["pool"]]),
        np.vstack([s.vectors() for s in held["queries"]]),
    )
    rows = []
    runs = [
        (name, views)
        for name in ["all-minilm-l6-v2", *args.encoder]
        for views in args.views.split(",")
    ] + [(d, None) for d in args.score]
    one_view_seconds = None
    for name, views in runs:
        enc_dir, fit = Path(name), None
        if views is not None:
            enc_dir = out / f"{Path(name).name}-{views}"
            start = time.perf_counter()
            if not enc_dir.is_dir():
                distill_stores(
                    train["pool"],
                    train["queries"],
                    enc_dir,
                    # scored on its own test blocks: the head fits every training sample
                    DistillArguments(
                        epochs=0,
                        views=views,
                        max_seq_length=args.max_seq_length,
                        holdout_fraction=0,
                    ),
                    encoder=name,
                    progress=False,
                )
            fit = time.perf_counter() - start
        head = json.loads((enc_dir / "influcoder_distill.json").read_text())["head"]
        # loaded first, so the time below is encoding (every view) and scoring only
        encoder = sample_encoder(str(enc_dir), lambda path: FastEncoder(path, backend="torch"))
        start = time.perf_counter()
        scores, _ = encoder_scores(encoder, samples["pool"], samples["queries"])
        seconds = time.perf_counter() - start
        one_view_seconds = one_view_seconds or seconds  # the first row's: one view
        low, high = metrics.bootstrap_interval(
            metrics.per_anchor_spearman, gt, scores, n_resamples=args.n_boot
        )
        rows.append(
            {
                "encoder": Path(name).name,
                "--views": views or "(as trained)",
                "kept": "+".join(head["views"]),
                "per-anchor": metrics.per_anchor_spearman(gt, scores),
                "95%": f"[{low:.2f}, {high:.2f}]",
                "pairwise": metrics.pairwise_spearman(gt, scores),
                "aggregated": metrics.aggregated_spearman(gt, scores),
                "CV": json.dumps(head["views_validation_per_anchor_spearman"]),
                "fit s": fit,
                "encode x": seconds / one_view_seconds,
            }
        )
        print(rows[-1], flush=True)
    print(f"held-out pool x held-out queries: {gt.shape[0]} x {gt.shape[1]}")
    print(
        common.table(
            rows,
            [
                "encoder",
                "--views",
                "kept",
                "per-anchor",
                "95%",
                "pairwise",
                "aggregated",
                "CV",
                "fit s",
                "encode x",
            ],
        )
    )
    print(f"\nreproduce: {common.command_line()}")


if __name__ == "__main__":
    main()
