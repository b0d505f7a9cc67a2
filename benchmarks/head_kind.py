"""Linear head or kernel head: fidelity on held-out samples, and what each costs to apply.

For each encoder (the bundled MiniLM and any ``--encoder DIR``; a multi-view directory is
embedded through its backbone) and each set of views, the head is fitted on the learning
curve's training side three ways, as ``distill --head`` does (similarity ``auto``):
``linear`` (ridge regression), ``kernel`` (RBF kernel ridge) and ``auto`` (both on the same folds, the
better cross-validated per-anchor Spearman kept). Reported:

* **validation**: the head's own cross-validation on the training side (pool fold x query
  fold, refitted on the rest), the figure ``auto`` chooses by;
* **held out**: both held-out blocks together (320 pool x 96 queries, never fitted on), with
  bootstrap intervals;
* **apply ms**: applying the fitted head to the held-out samples' features, and that as a
  percentage of one encoder pass over the same samples' views, timed in this process (what
  the head adds to encoding).

    python benchmarks/head_kind.py --work runs/lc --encoder runs/lc/encoder_2views --views "text;text,response"
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import common
import numpy as np


def _apply(head, pool, queries):
    return head(pool), head(queries)


def main() -> None:
    from influcoder import metrics
    from influcoder.distillation import head as h
    from influcoder.distillation.settings import HEAD_CHOICES
    from influcoder.encoders.directory import (
        backbone_path,
        is_multi_view,
        load_encoder,
        view_texts,
    )

    args, stores, vec, gt, view_sets = common.head_benchmark(__doc__.split("\n\n")[0])
    held = [s.samples for p, s in stores.items() if not p.startswith("train")]
    held = [x for samples in held for x in samples]

    rows = []
    for name in ["all-minilm-l6-v2", *args.encoder]:
        features = common.view_features(name, stores, view_sets, args.max_seq_length)
        model = load_encoder(str(backbone_path(name) if is_multi_view(Path(name)) else name))
        model.max_seq_length = args.max_seq_length
        for views in view_sets:
            x = features[views]
            test_pool = np.vstack([x["test_pool"], x["extra_pool"]])
            test_queries = np.vstack([x["test_queries"], x["extra_queries"]])
            texts = [t for per_view in view_texts(held, views) for t in per_view]
            encoder_s = common.best_of(partial(model.encode, texts, batch_size=32), repeats=1)
            for kind in ("linear", "kernel", "auto"):  # distill --head's choices
                kinds = HEAD_CHOICES[kind]
                start = time.perf_counter()
                head = h.fit_head(
                    x["train_pool"],
                    vec["train_pool"],
                    x["train_queries"],
                    vec["train_queries"],
                    components=args.components,
                    similarity="auto",
                    kinds=kinds,
                )
                fit_s = time.perf_counter() - start
                pred = h.head_scores(head(test_pool), head(test_queries), head.similarity)
                apply_s = common.best_of(partial(_apply, head, test_pool, test_queries))
                intervals = {
                    f: metrics.bootstrap_interval(
                        getattr(metrics, f), gt, pred, n_resamples=args.n_boot
                    )
                    for f in ("per_anchor_spearman", "aggregated_spearman")
                }
                card = head.card()
                rows.append(
                    {
                        "encoder": Path(name).name,
                        "views": "+".join(views),
                        "head": kind,
                        "kept": card["kind"]
                        + ("" if card["kind"] == "linear" else f" g{card['gamma_factor']:g}")
                        + f" a{head.alpha:g}"
                        + f" {head.similarity}",
                        "val per-anchor": card["kinds_validation_per_anchor_spearman"][
                            card["kind"]
                        ],
                        "per-anchor": metrics.per_anchor_spearman(gt, pred),
                        "per-anchor 95%": "[{:.2f}, {:.2f}]".format(
                            *intervals["per_anchor_spearman"]
                        ),
                        "pairwise": metrics.pairwise_spearman(gt, pred),
                        "aggregated": metrics.aggregated_spearman(gt, pred),
                        "aggregated 95%": "[{:.2f}, {:.2f}]".format(
                            *intervals["aggregated_spearman"]
                        ),
                        "fit s": fit_s,
                        "apply ms": 1000 * apply_s,
                        "apply % of encoding": 100 * apply_s / encoder_s,
                    }
                )
                print(rows[-1], flush=True)
    print(
        f"held-out pool x held-out queries: {gt.shape[0]} x {gt.shape[1]}; the encoder pass "
        f"the apply time is compared with: {len(held)} samples x each view, this process"
    )
    print(
        common.table(
            rows,
            [
                "encoder",
                "views",
                "head",
                "kept",
                "val per-anchor",
                "per-anchor",
                "per-anchor 95%",
                "pairwise",
                "aggregated",
                "aggregated 95%",
                "fit s",
                "apply ms",
                "apply % of encoding",
            ],
        )
    )
    print(f"\nreproduce: {common.command_line()}")


if __name__ == "__main__":
    main()
