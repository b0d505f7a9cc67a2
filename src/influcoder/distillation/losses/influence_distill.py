"""The distillation objective: a weighted sum of the Pearson and softmax KL losses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from influcoder.distillation.losses._scores import block_scores
from influcoder.distillation.losses.pearson import aggregated_pearson_loss, pearson_loss
from influcoder.distillation.losses.softmax_kl import (
    DEFAULT_TEMPERATURE,
    check_temperatures,
    softmax_kl_loss,
)
from influcoder.distillation.settings import (
    DEFAULT_AGGREGATE_WEIGHT,
    DEFAULT_KL_WEIGHT,
    DEFAULT_PEARSON_WEIGHT,
    check_weights,
)


class InfluenceDistillLoss(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        pearson_weight: float = DEFAULT_PEARSON_WEIGHT,
        kl_weight: float = DEFAULT_KL_WEIGHT,
        temperature: float = DEFAULT_TEMPERATURE,
        target_temperature: float | None = None,
        aggregate_weight: float = DEFAULT_AGGREGATE_WEIGHT,
    ) -> None:
        """
        The Influcoder distillation loss: teaches a sentence encoder to rank pool samples for a
        query the way their gradient influence does.

        ``loss = pearson_weight * (1 - r) + kl_weight * KL + aggregate_weight * (1 - r_agg)``,
        computed on the cosine block of one embedding pass: ``r`` is the Pearson correlation of
        the block's predicted and ground-truth scores (see :class:`PearsonLoss`), ``KL`` the mean
        over queries of the divergence between their ground-truth and predicted softmax
        distributions over the pool samples (see :class:`SoftmaxKLLoss`), and ``r_agg`` the
        Pearson correlation of each pool sample's mean score over the block's queries (see
        :func:`aggregated_pearson_loss`).

        The terms do different jobs. The KL term, at a low temperature, pulls each query's
        most influential pool samples to the top of its ranking, which is what attribution
        retrieves, but its gradient comes mostly from those few samples. The Pearson term keeps
        the rest of the block in order and the scores comparable across queries, which
        pool-wide (aggregated) rankings need. The KL term leads (weight 1) and the Pearson term
        supports it: the Influcoder paper's code found temperature 0.05 and a Pearson weight
        between 0.2 and 0.5 best, hence the defaults ``temperature=0.05``,
        ``pearson_weight=0.3``, ``kl_weight=1.0``. The aggregated term asks for the pool-wide
        ranking itself, which carries only a few percent of the block's variance and so is
        hardly seen by the Pearson term; it trades a little per-query ranking for it, hence
        ``aggregate_weight=0`` by default and 0.5 when the encoder is for pool-wide rankings.

        Args:
            model: the SentenceTransformer being trained.
            pearson_weight: weight of the Pearson term (``>= 0``).
            kl_weight: weight of the softmax KL term (``>= 0``; not all weights 0).
            temperature: divides the predicted cosines in the KL term.
            target_temperature: divides the ground-truth scores in the KL term; ``None``
                (default) uses ``temperature``.
            aggregate_weight: weight of the aggregated term (``>= 0``). It targets the pool-wide
                ranking that aggregated Spearman scores; 0 (off) by default, see
                docs/DISTILLATION.md for what it was measured to do.

        References:
            - Influcoder: https://arxiv.org/abs/2606.13668

        Inputs:
            ``[pool_features, query_features]`` and the ``[P, Q]`` ground-truth block, as
            :mod:`influcoder.distillation.losses` describes.

        Relations:
            - With ``pearson_weight=1, kl_weight=0`` it is :class:`PearsonLoss`.
            - With ``pearson_weight=0, kl_weight=1`` it is :class:`SoftmaxKLLoss`.

        Example:
            ::

                import torch
                from sentence_transformers import SentenceTransformer
                from influcoder.distillation.losses import InfluenceDistillLoss

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                loss = InfluenceDistillLoss(model)
                pool = model.preprocess(["Paris is in France.", "Boil eggs nine minutes.",
                                         "Rome is in Italy."])
                queries = model.preprocess(["capital of France?", "how to cook an egg?"])
                labels = torch.tensor([[0.8, 0.0], [0.1, 0.7], [0.4, 0.0]])
                loss([pool, queries], labels).backward()
        """
        super().__init__()
        target_temperature = temperature if target_temperature is None else target_temperature
        check_weights(pearson_weight, kl_weight, aggregate_weight)
        check_temperatures(temperature, target_temperature)
        self.model = model
        self.pearson_weight = pearson_weight
        self.kl_weight = kl_weight
        self.temperature = temperature
        self.target_temperature = target_temperature
        self.aggregate_weight = aggregate_weight

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        return self.block_loss(block_scores(self.model, sentence_features), labels)

    def block_loss(self, scores: Tensor, labels: Tensor) -> Tensor:
        """The loss of an already computed ``[P, Q]`` block of predicted cosines."""
        loss = self.pearson_weight * pearson_loss(
            scores, labels
        ) + self.kl_weight * softmax_kl_loss(
            scores, labels, self.temperature, self.target_temperature
        )
        if self.aggregate_weight:
            loss = loss + self.aggregate_weight * aggregated_pearson_loss(scores, labels)
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "pearson_weight": self.pearson_weight,
            "kl_weight": self.kl_weight,
            "temperature": self.temperature,
            "target_temperature": self.target_temperature,
            "aggregate_weight": self.aggregate_weight,
        }
