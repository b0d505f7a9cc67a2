"""Joint distillation's set-up (``regression_weight > 0``): the trainable head the epochs train
through, its regression targets, and the optimizer's parameter groups. The loop itself is
:func:`influcoder.distill.trainer.distill`; the loss term is
:func:`influcoder.distill.losses.cosine_regression_loss`."""

from __future__ import annotations

from typing import Any

import torch

from influcoder.distill.head import append_head, training_head
from influcoder.distill.settings import DistillArguments

# Joint training: the head's learning rate is this multiple of the encoder's. It starts from a
# closed-form fit and only has to follow the encoder's drift, but at the encoder's rate (5e-5
# when this was set, 2e-4 now) it would hardly move.
HEAD_LR_SCALE = 20.0


def joint_head(encoder, pool_texts, query_texts, pool_vectors, query_vectors, split,
               args: DistillArguments):
    """For joint training, append the starting head to ``encoder`` and return the regression
    targets ``(pool [n_pool, k], queries [n_query, k])`` as tensors; otherwise ``None``."""
    if args.regression_weight == 0:
        return None
    if pool_vectors is None or query_vectors is None:
        raise ValueError("regression_weight > 0 needs the ground-truth vectors: pass "
                         "pool_vectors and query_vectors")
    if len(pool_vectors) != len(pool_texts) or len(query_vectors) != len(query_texts):
        raise ValueError(f"one vector per text is needed: {len(pool_vectors)} pool vectors for "
                         f"{len(pool_texts)} texts, {len(query_vectors)} query vectors for "
                         f"{len(query_texts)} texts")
    head, pool_targets, query_targets = training_head(
        encoder, pool_texts, query_texts, pool_vectors, query_vectors, split.train_pool,
        split.train_query, components=args.head_components, seed=args.seed)
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
    return [{"params": [p for p in trained if id(p) not in ids], "lr": lr},
            {"params": head, "lr": HEAD_LR_SCALE * lr}]
