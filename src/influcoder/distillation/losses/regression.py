"""The regression term of joint distillation: each sample's output onto its gradient's place.

The ranking terms (:class:`~influcoder.distillation.losses.InfluenceDistillLoss`) see a sample only
through its scores against the step's other samples; this term tells the encoder where the
sample itself lies in gradient space: ``1 - cos(output_i, target_i)``, averaged over the samples,
where ``target_i`` is the principal coordinates of sample ``i``'s normalised gradient
(:func:`influcoder.distillation.linear.principal_coordinates`). Cosine rather than MSE because only
directions matter downstream: attribution compares outputs by cosine. It needs no pairing, so
every sample with a ground-truth vector is a training example.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cosine_regression_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """``mean_i (1 - cos(outputs_i, targets_i))`` over the rows of two ``[n, k]`` tensors."""
    if outputs.shape != targets.shape or outputs.ndim != 2:
        raise ValueError(
            f"outputs and targets must be [n, k] of the same shape, got "
            f"{tuple(outputs.shape)} and {tuple(targets.shape)}"
        )
    targets = targets.to(dtype=outputs.dtype, device=outputs.device)
    return (1.0 - F.cosine_similarity(outputs, targets, dim=1)).mean()
