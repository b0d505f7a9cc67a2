"""Should the linear head's outputs be compared by cosine (today) or by dot product?

The head regresses each sample's principal coordinates in gradient space; its prediction for a
sample it is unsure of is shrunk towards the mean. Scaling every prediction to unit length (the
``Normalize`` after the head, so that indexes compare by cosine) undoes that shrinkage, and the
pool-wide ranking (aggregated Spearman: each pool sample's score averaged over the queries)
depends on exactly that scale. This measures both scorings of the same fitted head:

* **validation**: the head's own cross-validation folds on the training side
  (:func:`influcoder.distillation.head_fit.fit_head`: held-out pool fold x held-out query fold, the head
  refitted on the rest), at the alpha each similarity's folds chose; ``(auto)`` marks the one
  ``distill --head-similarity auto`` keeps (the higher mean of the two validation figures);
* **held out**: both held-out blocks of the learning curve's stores together (320 pool x 96
  queries, never fitted on), with bootstrap intervals.

For each encoder (the bundled MiniLM and any ``--encoder DIR``; a multi-view directory is
embedded through its backbone) and each set of views:

    python benchmarks/head_similarity.py --work runs/lc --encoder runs/lc/encoder_2views
"""

from __future__ import annotations

from pathlib import Path

import common
import numpy as np


def main() -> None:
    from influcoder import metrics
    from influcoder.distillation import head as h

    args, stores, vec, gt, view_sets = common.head_benchmark(__doc__.split("\n\n")[0])

    rows = []
    for name in ["all-minilm-l6-v2", *args.encoder]:
        features = common.view_features(name, stores, view_sets, args.max_seq_length)
        for views in view_sets:
            x = features[views]
            auto = h.fit_head(
                x["train_pool"],
                vec["train_pool"],
                x["train_queries"],
                vec["train_queries"],
                components=args.components,
                similarity="auto",
            )
            for how in h.SIMILARITIES:
                # each at its own alpha (what distill keeps for it); validation: its folds
                head = h.fit_head(
                    x["train_pool"],
                    vec["train_pool"],
                    x["train_queries"],
                    vec["train_queries"],
                    components=args.components,
                    similarity=how,
                )
                pred = h.head_scores(
                    head(np.vstack([x["test_pool"], x["extra_pool"]])),
                    head(np.vstack([x["test_queries"], x["extra_queries"]])),
                    how,
                )
                lo, hi = metrics.bootstrap_interval(
                    metrics.aggregated_spearman, gt, pred, n_resamples=args.n_boot
                )
                val = head.similarity_validation[how]
                rows.append(
                    {
                        "encoder": Path(name).name,
                        "views": "+".join(views),
                        "similarity": how + (" (auto)" if how == auto.similarity else ""),
                        "alpha": head.alpha,
                        "val per-anchor": val["per_anchor"],
                        "val aggregated": val["aggregated"],
                        "per-anchor": metrics.per_anchor_spearman(gt, pred),
                        "pairwise": metrics.pairwise_spearman(gt, pred),
                        "aggregated": metrics.aggregated_spearman(gt, pred),
                        "aggregated 95%": f"[{lo:.2f}, {hi:.2f}]",
                    }
                )
                print(rows[-1], flush=True)
    print(f"held-out pool x held-out queries: {gt.shape[0]} x {gt.shape[1]}")
    print(
        common.table(
            rows,
            [
                "encoder",
                "views",
                "similarity",
                "alpha",
                "val per-anchor",
                "val aggregated",
                "per-anchor",
                "pairwise",
                "aggregated",
                "aggregated 95%",
            ],
        )
    )
    print(f"\nreproduce: {common.command_line()}")


if __name__ == "__main__":
    main()
