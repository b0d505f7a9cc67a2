"""Joint distillation's set-up (``regression_weight > 0``): the trainable head the epochs train
through, its regression targets, and the optimizer's parameter groups. The loop itself is
:func:`influcoder.distillation.trainer.distill`; the loss term is
:func:`influcoder.distillation.losses.cosine_regression_loss`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from influcoder.distillation.export import append_head, embed
from influcoder.distillation.head_fit import DEFAULT_FOLDS, fit_head
from influcoder.distillation.linear import (
    DEFAULT_COMPONENTS,
    LinearHead,
    check_rows,
    principal_directions,
    unit_rows,
)
from influcoder.distillation.settings import DistillArguments

# Joint training: the head's learning rate is this multiple of the encoder's. It starts from a
# closed-form fit and only has to follow the encoder's drift, but at the encoder's rate (5e-5
# when this was set, 2e-4 now) it would hardly move.
HEAD_LR_SCALE = 20.0


def joint_head(
    encoder, pool_texts, query_texts, pool_vectors, query_vectors, split, args: DistillArguments
):
    """For joint training, append the starting head to ``encoder`` and return the regression
    targets ``(pool [n_pool, k], queries [n_query, k])`` as tensors; otherwise ``None``."""
    if args.regression_weight == 0:
        return None
    if pool_vectors is None or query_vectors is None:
        raise ValueError(
            "regression_weight > 0 needs the ground-truth vectors: pass "
            "pool_vectors and query_vectors"
        )
    if len(pool_vectors) != len(pool_texts) or len(query_vectors) != len(query_texts):
        raise ValueError(
            f"one vector per text is needed: {len(pool_vectors)} pool vectors for "
            f"{len(pool_texts)} texts, {len(query_vectors)} query vectors for "
            f"{len(query_texts)} texts"
        )
    head, pool_targets, query_targets = training_head(
        encoder,
        pool_texts,
        query_texts,
        pool_vectors,
        query_vectors,
        split.train_pool,
        split.train_query,
        components=args.head_components,
        seed=args.seed,
    )
    append_head(encoder, head, normalize=False)
    return torch.from_numpy(pool_targets), torch.from_numpy(query_targets)


def parameter_groups(encoder, lr: float, joint: bool) -> list[dict[str, Any]]:
    """AdamW's parameter groups: the encoder's trainable parameters at ``lr``; with a training head (the last
    module), the head at ``HEAD_LR_SCALE * lr``."""
    trained = [p for p in encoder.parameters() if p.requires_grad]  # not the frozen layers
    if not joint:
        return [{"params": trained, "lr": lr}]
    head = list(encoder[-1].parameters())
    ids = {id(p) for p in head}
    return [
        {"params": [p for p in trained if id(p) not in ids], "lr": lr},
        {"params": head, "lr": HEAD_LR_SCALE * lr},
    ]


def training_head(
    encoder,
    pool_texts: Sequence[str],
    query_texts: Sequence[str],
    pool_vectors,
    query_vectors,
    train_pool: np.ndarray,
    train_query: np.ndarray,
    *,
    components: int = DEFAULT_COMPONENTS,
    seed: int = 0,
) -> tuple[LinearHead, np.ndarray, np.ndarray]:
    """The head joint distillation starts from, and every sample's regression target.

    The principal directions and the ridge fit (alpha cross-validated as in :func:`fit_head`)
    see the training rows ``train_pool`` and ``train_query`` only, so validation stays unseen.
    Returns ``(head, pool_targets, query_targets)``: the targets are ``[n, k]`` float32
    principal coordinates for *every* row (validation rows included, for completeness; the
    trainer only reads the training rows).
    """
    folds = min(DEFAULT_FOLDS, len(train_pool) // 2, len(train_query) // 2)
    if folds < 2:
        raise ValueError(
            f"joint training's head needs at least 4 training pool samples and 4 "
            f"training queries, got {len(train_pool)} and {len(train_query)}"
        )
    gp, gq = check_rows(pool_vectors, "pool_vectors"), check_rows(query_vectors, "query_vectors")
    head = fit_head(
        embed(encoder, [pool_texts[i] for i in train_pool]),
        gp[train_pool],
        embed(encoder, [query_texts[j] for j in train_query]),
        gq[train_query],
        components=components,
        folds=folds,
        seed=seed,
    )
    directions = principal_directions(np.vstack([gp[train_pool], gq[train_query]]), components)
    return (
        head,
        (unit_rows(gp) @ directions.T).astype(np.float32),
        (unit_rows(gq) @ directions.T).astype(np.float32),
    )
