"""Softmax KL loss: each query's distribution over the pool, ground truth against prediction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from influcoder.distillation.losses._scores import block_scores, check_block
from influcoder.distillation.settings import DEFAULT_TEMPERATURE, check_temperatures


def softmax_kl_loss(
    pred: Tensor,
    target: Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    target_temperature: float | None = None,
) -> Tensor:
    """Mean over queries of ``KL(softmax(target[:, j] / T_gt) || softmax(pred[:, j] / T))``.

    Each column of a ``[P, Q]`` block is one query's scores over the ``P`` pool samples; the
    softmax turns it into a distribution over those samples, and the KL divergence from the
    ground-truth distribution to the predicted one is averaged over the ``Q`` queries. The loss
    is 0 exactly when every predicted column equals its ground-truth column up to a constant
    shift (for equal temperatures). It is not scaled by the temperature squared (as Hinton et
    al.'s distillation loss is): at ``T = 0.05`` that would shrink it 400-fold against the
    Pearson term it is combined with.

    Args:
        pred: predicted scores ``[P, Q]`` (pool x query).
        target: ground-truth scores ``[P, Q]``; cast to ``pred``'s dtype and device.
        temperature: divides the predicted scores; lower is sharper.
        target_temperature: divides the ground-truth scores; ``None`` uses ``temperature``.
    """
    target_temperature = temperature if target_temperature is None else target_temperature
    check_temperatures(temperature, target_temperature)
    target = check_block(pred, target, two_dims_for="softmax_kl_loss")
    log_p = F.log_softmax(target / target_temperature, dim=0)
    log_q = F.log_softmax(pred / temperature, dim=0)
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=0).mean()


class SoftmaxKLLoss(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        temperature: float = DEFAULT_TEMPERATURE,
        target_temperature: float | None = None,
    ) -> None:
        """
        Softmax KL loss for distilling a matrix of influence scores into a sentence encoder.

        The encoder embeds a block of ``P`` pool texts and ``Q`` query texts. For each query, the
        cosines to the ``P`` pool texts divided by ``temperature`` go through a softmax over the
        pool, and so do the ground-truth scores (divided by ``target_temperature``); the loss is
        the KL divergence from the ground-truth distribution to the predicted one, averaged over
        the queries. A low temperature concentrates the distributions, and so the training
        signal, on each query's most influential pool samples: the ones attribution retrieves.

        Args:
            model: the SentenceTransformer being trained.
            temperature: divides the predicted cosines. 0.05 was best in the Influcoder paper's
                experiments: cosines lie in ``[-1, 1]``, so logits span at most 40, sharp enough
                to single out the top few pool samples of a batch yet far from float32
                underflow.
            target_temperature: divides the ground-truth scores; ``None`` (default) uses
                ``temperature``. Lower it when the ground-truth scores are spread much more
                narrowly than the encoder's cosines, so both distributions are equally sharp.

        References:
            - Influcoder: https://arxiv.org/abs/2606.13668
            - Distilling the knowledge in a neural network (Hinton et al.):
              https://arxiv.org/abs/1503.02531

        Inputs:
            ``[pool_features, query_features]`` and the ``[P, Q]`` ground-truth block, as
            :mod:`influcoder.distillation.losses` describes.

        Relations:
            - :class:`PearsonLoss` matches the scores of the whole block instead.
            - :class:`InfluenceDistillLoss` is a weighted sum of the two, embedding the texts once.

        Example:
            The loss of a block of cosines (what the module computes after embedding the
            texts; :class:`InfluenceDistillLoss` shows the module on real texts)::

                import torch
                from influcoder.distillation.losses import softmax_kl_loss

                cosines = torch.randn(3, 2, requires_grad=True)    # 3 pool texts x 2 queries
                labels = torch.tensor([[0.8, 0.0], [0.1, 0.7], [0.4, 0.0]])
                softmax_kl_loss(cosines, labels, temperature=0.05).backward()
        """
        super().__init__()
        target_temperature = temperature if target_temperature is None else target_temperature
        check_temperatures(temperature, target_temperature)
        self.model = model
        self.temperature = temperature
        self.target_temperature = target_temperature

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        return softmax_kl_loss(
            block_scores(self.model, sentence_features),
            labels,
            self.temperature,
            self.target_temperature,
        )

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "target_temperature": self.target_temperature}
