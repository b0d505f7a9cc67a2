"""Distil from ground-truth stores: the glue between ``collect`` and :func:`distill`."""

from __future__ import annotations

import os

from influcoder.attribution.settings import DEFAULT_ENCODER
from influcoder.distill.settings import DistillArguments
from influcoder.distill.trainer import DistillResult, distill
from influcoder.errors import InflucoderError, StoreError
from influcoder.groundtruth.influence import cosine_scores
from influcoder.io.samples import encoder_text
from influcoder.io.stores import Store


def ground_truth_card(pool: Store, queries: Store) -> dict:
    """What an encoder was distilled from: enough to tell whether two encoders learnt the same
    ground truth."""
    return {"setup": pool.setup,
            "pool": {"path": str(pool.path), "n": pool.n,
                     "samples_sha256": pool.manifest["samples_sha256"]},
            "queries": {"path": str(queries.path), "n": queries.n,
                        "samples_sha256": queries.manifest["samples_sha256"]}}


def distill_stores(pool: Store, queries: Store, out: str | os.PathLike,
                   args: DistillArguments | None = None, *, encoder: str = DEFAULT_ENCODER,
                   progress: bool = True) -> DistillResult:
    """Train ``encoder`` on the cosines of two gradient stores; save it to ``out``."""
    from influcoder.attribution.encoders import load_encoder

    for s in (pool, queries):
        if s.kind != "gradients":
            raise StoreError(f"{s.path}: distillation needs gradient stores (ground truth), "
                             f"this one holds {s.kind}")
    gt = cosine_scores(pool, queries)  # also refuses stores of different setups
    model = load_encoder(encoder)
    try:
        return distill(model, [encoder_text(s) for s in pool.samples],
                       [encoder_text(s) for s in queries.samples], gt, args or DistillArguments(),
                       out_dir=out, progress=progress,
                       extra_card={"ground_truth": ground_truth_card(pool, queries),
                                   "base_encoder": encoder})
    except ValueError as e:  # too few samples to split, bad settings: the user's to fix
        raise InflucoderError(str(e)) from None
