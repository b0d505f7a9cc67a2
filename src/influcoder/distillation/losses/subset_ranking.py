"""AirRep's subset-ranking loss: order training subsets as retraining on them ordered the loss.

For a query ``x`` and two retraining runs on pool subsets ``S_a``, ``S_b`` whose measured
losses on ``x`` are ``l_a < l_b``, training on ``S_a`` helped ``x`` more, so the score
``s(x, S_a)`` (a set pooling of the members' embeddings, :mod:`influcoder.distillation.pooling`)
should exceed ``s(x, S_b)``. The loss is RankNet's logistic loss on every such ordered pair,
weighted by how far apart the two losses are:

    t_r   = clip(-(l_r - mean_r l) / std_r l, -10, 10)          (per query, over the runs)
    loss  = sum_{x, t_a > t_b} w_ab * softplus(-(s_a - s_b) / T) / sum w_ab,
    w_ab  = min(t_a - t_b, max_weight)

As AirRep's released trainer does, the losses are standardised per query over the runs (a
query whose loss barely moves weighs as much as one that moves a lot, its pairs ordered by
their standardised gaps) and the weights are the gaps, clipped. One difference: the weighted
losses are divided by the sum of the weights rather than by the number of pairs, so the loss
is ``log 2`` at chance whatever the gaps, and comparable across batches.

References:
    - AirRep (Sun et al.), Enhancing Training Data Attribution with Representational
      Optimization: https://arxiv.org/abs/2505.18513
    - RankNet (Burges et al.), Learning to Rank using Gradient Descent, ICML 2005.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Standardised losses are clipped to this many standard deviations (AirRep's trainer).
TARGET_CLIP = 10.0
DEFAULT_MAX_WEIGHT = 10.0


def standardised_targets(losses: Tensor) -> Tensor:
    """``[R, Q]`` targets: each query's losses over the ``R`` runs, negated (lower loss,
    higher target), centred, divided by their standard deviation (1 when it is 0), clipped."""
    centred = losses - losses.mean(dim=0, keepdim=True)
    std = losses.std(dim=0, unbiased=False, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (-centred / std).clamp(-TARGET_CLIP, TARGET_CLIP)


def subset_ranking_loss(
    scores: Tensor,
    losses: Tensor,
    *,
    temperature: float = 1.0,
    max_weight: float = DEFAULT_MAX_WEIGHT,
) -> Tensor:
    """The weighted pairwise ranking loss of the module docstring.

    Args:
        scores: ``[R, Q]`` predicted scores ``s(x_q, S_r)`` of ``R`` subsets for ``Q`` queries.
        losses: ``[R, Q]`` measured losses of the runs on the queries (lower: the subset helped).
        temperature: divides the score differences; lower is sharper.
        max_weight: the largest weight a pair gets (standardised gap clipped here).

    Returns:
        A scalar; 0 (still attached to ``scores``) when no query has two runs of different loss.

    Example:
        ::

            import torch
            from influcoder.distillation.losses import subset_ranking_loss

            scores = torch.randn(4, 3, requires_grad=True)    # 4 subsets x 3 queries
            losses = torch.rand(4, 3)                        # each run's loss on each query
            subset_ranking_loss(scores, losses).backward()
    """
    if scores.ndim != 2 or scores.shape != losses.shape:
        raise ValueError(
            f"scores and losses must be [subsets, queries] of one shape, got "
            f"{tuple(scores.shape)} and {tuple(losses.shape)}"
        )
    if not temperature > 0 or not max_weight > 0:
        raise ValueError(
            f"temperature and max_weight must be > 0, got {temperature} and {max_weight}"
        )
    targets = standardised_targets(losses.to(device=scores.device, dtype=scores.dtype))
    gap = targets[:, None, :] - targets[None, :, :]  # [R, R, Q]: t_a - t_b
    margin = (scores[:, None, :] - scores[None, :, :]) / temperature
    ordered = gap > 0
    if not bool(ordered.any()):
        return scores.sum() * 0.0
    weights = gap.clamp(max=max_weight)[ordered]
    return (weights * F.softplus(-margin[ordered])).sum() / weights.sum()
