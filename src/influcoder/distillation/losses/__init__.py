"""Losses for distilling influence scores into a sentence encoder.

They follow the sentence-transformers contract (``Loss(model)``, ``forward(features, labels)``,
``get_config_dict()``), with one difference in the inputs: ``features`` is
``[pool_features, query_features]``, two tokenized batches of different lengths ``P`` and ``Q``,
and ``labels`` is the ground-truth block ``[P, Q]`` of their influence scores:

+------------------------------------------+----------------------------------------+
| Inputs                                   | Labels                                 |
+==========================================+========================================+
| [pool_features, query_features]: two     | ground-truth influence block ``[P, Q]``|
| tokenized batches (``P`` and ``Q`` texts)| (pool sample i, query j)               |
+------------------------------------------+----------------------------------------+

:func:`subset_ranking_loss` is the exception: it learns from retraining runs, not from a
ground-truth block (scores of pool subsets against queries, and the runs' measured losses).
"""

from influcoder.distillation.losses.influence_distill import InfluenceDistillLoss
from influcoder.distillation.losses.pearson import (
    PearsonLoss,
    aggregated_pearson_loss,
    pearson_loss,
)
from influcoder.distillation.losses.regression import cosine_regression_loss
from influcoder.distillation.losses.softmax_kl import SoftmaxKLLoss, softmax_kl_loss
from influcoder.distillation.losses.subset_ranking import subset_ranking_loss

__all__ = [
    "InfluenceDistillLoss",
    "PearsonLoss",
    "SoftmaxKLLoss",
    "aggregated_pearson_loss",
    "cosine_regression_loss",
    "pearson_loss",
    "softmax_kl_loss",
    "subset_ranking_loss",
]
