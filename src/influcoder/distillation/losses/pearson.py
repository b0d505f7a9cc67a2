"""Pearson loss: one minus the correlation of predicted and ground-truth influence scores."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from influcoder.distillation.losses._scores import block_scores, check_block


def pearson_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - r``, with ``r`` the Pearson correlation of all entries of ``pred`` and ``target``.

    Pearson correlation is the cosine of the mean-centred vectors, which is how it is computed.
    The loss lies in ``[0, 2]``: 0 when ``pred`` is an increasing affine function of ``target``,
    1 when they are uncorrelated (or either is constant), 2 when ``pred`` is a decreasing one.

    Args:
        pred: predicted scores, any shape (a ``[P, Q]`` block in distillation).
        target: ground-truth scores of the same shape; cast to ``pred``'s dtype and device.
    """
    target = check_block(pred, target)
    pred, target = pred.flatten(), target.flatten()
    return 1 - F.cosine_similarity(pred - pred.mean(), target - target.mean(), dim=0)


def aggregated_pearson_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - r`` of each pool sample's mean score over the block's queries.

    The row means of a ``[P, Q]`` block are the block's estimate of what *aggregated Spearman*
    ranks: each pool sample's score averaged over the queries (its influence on the query set as
    a whole, which data cleaning and data valuation rank by). The Pearson term over all
    ``P * Q`` entries sees these means only as one small part of the block's variance, and each
    query's softmax KL term never compares one query's scores with another's; this term asks
    for the means alone. ``[0, 2]``, as :func:`pearson_loss`.

    Args:
        pred: predicted scores ``[P, Q]`` (pool x query).
        target: ground-truth scores ``[P, Q]``; cast to ``pred``'s dtype and device.
    """
    target = check_block(pred, target, two_dims_for="aggregated_pearson_loss")
    return pearson_loss(pred.mean(dim=1), target.mean(dim=1))


class PearsonLoss(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        """
        Pearson loss for distilling a matrix of influence scores into a sentence encoder.

        The encoder embeds a block of ``P`` pool texts and ``Q`` query texts; the cosine of every
        (pool, query) pair is a predicted score, and the loss is ``1 - r``, with ``r`` the Pearson
        correlation between the ``P * Q`` predicted scores and the ground-truth block. It is
        invariant to the scale and offset of the ground truth, so the encoder learns which pairs
        score higher than which, over the whole block, without having to reproduce the (small,
        model-dependent) range of gradient cosines.

        On its own it spends its effort evenly over all pairs; retrieval only needs the top of
        each query's ranking to be right, which :class:`SoftmaxKLLoss` attends to.
        :class:`InfluenceDistillLoss` combines the two.

        Args:
            model: the SentenceTransformer being trained.

        References:
            - Influcoder: https://arxiv.org/abs/2606.13668

        Inputs:
            ``[pool_features, query_features]`` and the ``[P, Q]`` ground-truth block, as
            :mod:`influcoder.distillation.losses` describes.

            Pool and query batches have different lengths, so this loss is driven by
            :func:`influcoder.distillation.distill` (which samples the blocks) rather than by the
            row-wise datasets of ``SentenceTransformerTrainer``.

        Relations:
            - :class:`SoftmaxKLLoss` matches each query's ranking of the pool instead.
            - :class:`InfluenceDistillLoss` is a weighted sum of the two, embedding the texts once.

        Example:
            ::

                import torch
                from sentence_transformers import SentenceTransformer
                from influcoder.distillation.losses import PearsonLoss

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                loss = PearsonLoss(model)
                pool = model.preprocess(["Paris is in France.", "Boil eggs nine minutes."])
                queries = model.preprocess(["capital of France?"])
                labels = torch.tensor([[0.8], [0.1]])  # gradient cosines, pool x query
                loss([pool, queries], labels).backward()
        """
        super().__init__()
        self.model = model

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        return pearson_loss(block_scores(self.model, sentence_features), labels)

    def get_config_dict(self) -> dict[str, Any]:
        return {}
