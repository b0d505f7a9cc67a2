"""Should the ridge head's outputs be compared by cosine (today) or by dot product?

The head regresses each sample's principal coordinates in gradient space; its prediction for a
sample it is unsure of is shrunk towards the mean. Scaling every prediction to unit length (the
``Normalize`` after the head, so that indexes compare by cosine) undoes that shrinkage, and the
pool-wide ranking (aggregated Spearman: each pool sample's score averaged over the queries)
depends on exactly that scale. This measures both scorings of the same fitted head:

* **validation**: the head's own cross-validation folds on the training side
  (:func:`influcoder.distill.head.validation_folds`: held-out pool fold x held-out query fold,
  the head refitted on the rest), at the alpha that cross-validation chose;
* **held out**: both held-out blocks of the learning curve's stores together (320 pool x 96
  queries, never fitted on), with bootstrap intervals.

For each encoder (the bundled MiniLM and any ``--encoder DIR``; a multi-view directory is
embedded through its backbone) and each set of views:

    python benchmarks/head_similarity.py --work runs/lc --encoder runs/lc/encoder_2views
"""

from __future__ import annotations

import argparse
from pathlib import Path

import common
import numpy as np

PARTS = ("train_pool", "train_queries", "test_pool", "test_queries", "extra_pool",
         "extra_queries")


def main() -> None:
    import torch

    from influcoder.attribution.encoders import load_encoder
    from influcoder.attribution.views import backbone_path, is_multi_view, view_texts
    from influcoder.distill.head import (
        cosine_matrix,
        embed,
        fit_head,
        principal_coordinates,
        ridge,
        unit_rows,
        validation_folds,
    )
    from influcoder.evaluation import metrics
    from influcoder.io.stores import open_store

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="runs/lc", help="the learning curve's --work")
    ap.add_argument("--encoder", action="append", default=[], help="more encoders (repeatable)")
    ap.add_argument("--views", default="text;text,response", help="';'-separated view sets")
    ap.add_argument("--max-seq-length", type=int, default=128, help="encoder tokens per text")
    ap.add_argument("--components", type=int, default=128)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    stores = {p: open_store(Path(args.work) / f"grad_{p}") for p in PARTS}
    vec = {p: s.vectors() for p, s in stores.items()}
    gt = cosine_matrix(np.vstack([vec["test_pool"], vec["extra_pool"]]),
                       np.vstack([vec["test_queries"], vec["extra_queries"]]))
    view_sets = [tuple(v.split(",")) for v in args.views.split(";")]
    wanted = sorted({v for views in view_sets for v in views})

    def scorings(hp, hq):
        return {"cosine": cosine_matrix(hp, hq), "dot": hp @ hq.T}

    rows = []
    for name in ["all-minilm-l6-v2", *args.encoder]:
        path = backbone_path(Path(name)) if is_multi_view(Path(name)) else name
        model = load_encoder(str(path))
        model.max_seq_length = args.max_seq_length
        emb = {p: dict(zip(wanted, (embed(model, t) for t in view_texts(s.samples, wanted))))
               for p, s in stores.items()}
        for views in view_sets:
            x = {p: np.hstack([unit_rows(emb[p][v]) for v in views]) for p in PARTS}
            head = fit_head(x["train_pool"], vec["train_pool"], x["train_queries"],
                            vec["train_queries"], components=args.components)
            # validation: the head's own folds, at its alpha, both scorings
            val = {"cosine": [], "dot": []}
            xp, xq, gp, gq = (x["train_pool"], x["train_queries"], vec["train_pool"],
                              vec["train_queries"])
            for vp, vq in validation_folds(len(xp), len(xq), 4, 0):
                fp, fq = np.setdiff1d(np.arange(len(xp)), vp), np.setdiff1d(np.arange(len(xq)), vq)
                w, b = ridge(np.vstack([xp[fp], xq[fq]]),
                             principal_coordinates(np.vstack([gp[fp], gq[fq]]), args.components),
                             head.alpha)
                fold_gt = cosine_matrix(gp[vp], gq[vq])
                for how, pred in scorings(xp[vp] @ w.T + b, xq[vq] @ w.T + b).items():
                    val[how].append((metrics.per_anchor_spearman(fold_gt, pred),
                                     metrics.aggregated_spearman(fold_gt, pred)))
            held = scorings(head(np.vstack([x["test_pool"], x["extra_pool"]])),
                            head(np.vstack([x["test_queries"], x["extra_queries"]])))
            for how, pred in held.items():
                lo, hi = metrics.bootstrap_interval(metrics.aggregated_spearman, gt, pred,
                                                    n_resamples=args.n_boot)
                v_pa, v_agg = np.mean(val[how], axis=0)
                rows.append({"encoder": Path(name).name, "views": "+".join(views),
                             "scoring": how, "alpha": head.alpha,
                             "val per-anchor": v_pa, "val aggregated": v_agg,
                             "per-anchor": metrics.per_anchor_spearman(gt, pred),
                             "pairwise": metrics.pairwise_spearman(gt, pred),
                             "aggregated": metrics.aggregated_spearman(gt, pred),
                             "aggregated 95%": f"[{lo:.2f}, {hi:.2f}]"})
                print(rows[-1], flush=True)
    print(f"held-out pool x held-out queries: {gt.shape[0]} x {gt.shape[1]}")
    print(common.table(rows, ["encoder", "views", "scoring", "alpha", "val per-anchor",
                              "val aggregated", "per-anchor", "pairwise", "aggregated",
                              "aggregated 95%"]))
    print(f"\nreproduce: {common.command_line()}")


if __name__ == "__main__":
    main()
