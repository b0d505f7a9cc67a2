"""Does the linear head gain from the response embedded on its own? A measurement on the learning
curve's stores (``benchmarks/learning_curve.py --extra-test``): the head is fitted on the
training side and scored on both held-out blocks together.

For each encoder (the bundled MiniLM and any ``--encoder DIR``) every sample is embedded as its
encoder text (prompt, blank line, response: what influcoder encodes today) and as its response
alone; the head (:func:`influcoder.distillation.head_fit.fit_head`, alpha by its cross-validation) is
fitted on each view and on their concatenation (each unit length), and scored by per-anchor,
pairwise and aggregated Spearman against the gradient cosines.

    python benchmarks/response_view.py --work runs/lc \
        --encoder runs/lc/encoder_500x1000_q64_lr0.0002_4436e0bfb7
"""

from __future__ import annotations

import argparse
from pathlib import Path

import common
import numpy as np

VIEWS = {
    "text": ("text",),
    "response alone": ("response",),
    "text + response": ("text", "response"),
}
PARTS = common.LC_PARTS


def view_features(embeddings: dict[str, np.ndarray], views: tuple[str, ...]) -> np.ndarray:
    """The views' embeddings side by side, each row of each view scaled to unit length."""
    from influcoder.similarity import unit_rows

    return np.hstack([unit_rows(embeddings[v]) for v in views])


def main() -> None:
    import torch

    from influcoder import metrics
    from influcoder.distillation.export import embed
    from influcoder.distillation.head_fit import fit_head
    from influcoder.encoders.directory import load_encoder
    from influcoder.io.samples import encoder_text
    from influcoder.similarity import cosine_matrix

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.head_arguments(ap, threads=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    stores, vectors, gt = common.learning_curve_stores(args.work)
    rows = []
    for name in ["all-minilm-l6-v2", *args.encoder]:
        model = load_encoder(name)
        model.max_seq_length = args.max_seq_length
        emb = {
            p: {
                "text": embed(model, [encoder_text(x) for x in s.samples]),
                "response": embed(model, [x.response for x in s.samples]),
            }
            for p, s in stores.items()
        }
        for label, views in VIEWS.items():
            x = {p: view_features(emb[p], views) for p in PARTS}
            head = fit_head(
                x["train_pool"],
                vectors["train_pool"],
                x["train_queries"],
                vectors["train_queries"],
                components=args.components,
            )
            pred = cosine_matrix(
                head(np.vstack([x["test_pool"], x["extra_pool"]])),
                head(np.vstack([x["test_queries"], x["extra_queries"]])),
            )
            rows.append(
                {
                    "encoder": Path(name).name,
                    "head on": label,
                    "alpha": head.alpha,
                    "per-anchor": metrics.per_anchor_spearman(gt, pred),
                    "pairwise": metrics.pairwise_spearman(gt, pred),
                    "aggregated": metrics.aggregated_spearman(gt, pred),
                }
            )
    print(f"held-out pool x held-out queries: {gt.shape[0]} x {gt.shape[1]}")
    print(
        common.table(rows, ["encoder", "head on", "per-anchor", "pairwise", "aggregated", "alpha"])
    )
    print(f"\nreproduce: {common.command_line()}")


if __name__ == "__main__":
    main()
