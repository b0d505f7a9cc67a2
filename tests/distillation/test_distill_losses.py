"""Distillation losses: values against hand and numpy computations, gradients, configs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from influcoder.distillation.losses import (
    InfluenceDistillLoss,
    PearsonLoss,
    SoftmaxKLLoss,
    aggregated_pearson_loss,
    pearson_loss,
    softmax_kl_loss,
)
from influcoder.distillation.losses._scores import block_scores

PRED = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
TARGET = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def numpy_softmax_kl(pred, target, t_pred, t_target):
    """The KL of each column's ground-truth softmax to its predicted one, averaged (numpy)."""

    def softmax(x):
        e = np.exp(x - x.max(axis=0))
        return e / e.sum(axis=0)

    p, q = softmax(np.asarray(target) / t_target), softmax(np.asarray(pred) / t_pred)
    return float((p * np.log(p / q)).sum(axis=0).mean())


def test_pearson_loss_2x2_by_hand():
    # pred - mean = [-1.75, -0.75, 0.25, 2.25], target - mean = [0.5, -0.5, -0.5, 0.5]:
    # covariance sum 0.5, squared norms 8.75 and 1, so r = 0.5 / sqrt(8.75).
    expected = 1 - 0.5 / math.sqrt(8.75)
    assert pearson_loss(PRED, TARGET).item() == pytest.approx(expected, abs=1e-6)
    r = np.corrcoef(PRED.numpy().ravel(), TARGET.numpy().ravel())[0, 1]
    assert pearson_loss(PRED, TARGET).item() == pytest.approx(1 - r, abs=1e-6)


def test_pearson_loss_extremes():
    target = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    assert pearson_loss(target, target).item() == pytest.approx(0, abs=1e-6)
    assert pearson_loss(3 * target + 1, target).item() == pytest.approx(0, abs=1e-6)
    assert pearson_loss(-target, target).item() == pytest.approx(2, abs=1e-6)
    assert pearson_loss(torch.ones(5, 3), target).item() == pytest.approx(1, abs=1e-6)


def test_aggregated_pearson_loss_3x2_by_hand():
    pred = torch.tensor([[1.0, 2.0], [3.0, 5.0], [0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    # Row means: pred [1.5, 4, 0.5], target [0.5, 0.5, 0]; centred: [-0.5, 2, -1.5] and
    # [1/6, 1/6, -1/3]; covariance sum 0.75, squared norms 6.5 and 1/6.
    expected = 1 - 0.75 / math.sqrt(6.5 / 6)
    assert aggregated_pearson_loss(pred, target).item() == pytest.approx(expected, abs=1e-6)
    r = np.corrcoef(pred.numpy().mean(axis=1), target.numpy().mean(axis=1))[0, 1]
    assert aggregated_pearson_loss(pred, target).item() == pytest.approx(1 - r, abs=1e-6)


def test_aggregated_pearson_loss_sees_only_the_row_means():
    gen = torch.Generator().manual_seed(3)
    target = torch.randn(6, 4, generator=gen)
    # A per-query shift moves every row mean by the same amount: no change.
    shifted = target + torch.tensor([0.5, -2.0, 1.0, 3.0])
    assert aggregated_pearson_loss(shifted, target).item() == pytest.approx(0, abs=1e-6)
    # Each row's scores as in the target, but the row means reversed: this loss is at its
    # maximum, whatever the rest of the block does.
    means = target.mean(dim=1, keepdim=True)
    reversed_means = target - means - 3 * means
    assert aggregated_pearson_loss(reversed_means, target).item() == pytest.approx(2, abs=1e-6)
    with pytest.raises(ValueError, match="blocks"):
        aggregated_pearson_loss(target.ravel(), target.ravel())


def test_softmax_kl_2x2_by_hand():
    # Column 0: p = softmax([1, 0]), q = softmax([1, 3]); column 1: p = softmax([0, 1]),
    # q = softmax([2, 5]).
    def kl(p_logits, q_logits):
        p = np.exp(p_logits) / np.exp(p_logits).sum()
        q = np.exp(q_logits) / np.exp(q_logits).sum()
        return float((p * np.log(p / q)).sum())

    expected = (
        kl(np.array([1.0, 0.0]), np.array([1.0, 3.0]))
        + kl(np.array([0.0, 1.0]), np.array([2.0, 5.0]))
    ) / 2
    assert softmax_kl_loss(PRED, TARGET, temperature=1.0).item() == pytest.approx(
        expected, abs=1e-6
    )


@pytest.mark.parametrize("t_pred,t_target", [(0.05, None), (0.5, 0.1), (2.0, 1.0)])
def test_softmax_kl_matches_numpy(t_pred, t_target):
    gen = torch.Generator().manual_seed(1)
    pred, target = torch.rand(6, 4, generator=gen) * 2 - 1, torch.rand(6, 4, generator=gen)
    expected = numpy_softmax_kl(
        pred.double().numpy(),
        target.double().numpy(),
        t_pred,
        t_pred if t_target is None else t_target,
    )
    got = softmax_kl_loss(pred.double(), target.double(), t_pred, t_target).item()
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_softmax_kl_zero_when_equal_up_to_a_shift_per_query():
    target = torch.rand(5, 3, generator=torch.Generator().manual_seed(2))
    assert softmax_kl_loss(target, target).item() == pytest.approx(0, abs=1e-6)
    assert softmax_kl_loss(target + torch.tensor([0.3, -1.0, 2.0]), target).item() == pytest.approx(
        0, abs=1e-5
    )
    assert softmax_kl_loss(-target, target).item() > 0.1


def test_losses_refuse_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        pearson_loss(PRED, TARGET[:1])
    with pytest.raises(ValueError, match="same shape"):
        softmax_kl_loss(PRED, TARGET.T[:1])
    with pytest.raises(ValueError, match="temperatures"):
        softmax_kl_loss(PRED, TARGET, temperature=0.0)
    with pytest.raises(ValueError, match="blocks"):
        softmax_kl_loss(PRED.ravel(), TARGET.ravel())


LOSSES = [
    (PearsonLoss, {}),
    (SoftmaxKLLoss, {"temperature": 0.1, "target_temperature": 0.2}),
    (InfluenceDistillLoss, {"pearson_weight": 0.5, "kl_weight": 2.0, "temperature": 0.1}),
    (InfluenceDistillLoss, {"pearson_weight": 0.0, "kl_weight": 0.0, "aggregate_weight": 1.0}),
]


@pytest.fixture()
def tiny_block(tiny_encoder, planted):
    """Features of 6 pool texts and 3 queries for the tiny encoder, and their [6, 3] labels."""
    features = [
        tiny_encoder.preprocess(planted.pool_texts[:6]),
        tiny_encoder.preprocess(planted.query_texts[:3]),
    ]
    return features, torch.from_numpy(planted.gt[:6, :3])


@pytest.mark.parametrize("cls,kwargs", LOSSES)
def test_gradients_reach_the_encoder(tiny_encoder, tiny_block, cls, kwargs):
    features, labels = tiny_block
    tiny_encoder.train()
    loss = cls(tiny_encoder, **kwargs)(features, labels)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    # Every parameter but BERT's pooler (unused: the encoder mean-pools the tokens) gets a
    # non-zero gradient.
    grads = {name: p.grad for name, p in tiny_encoder.named_parameters() if ".pooler." not in name}
    assert len(grads) > 30
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())


@pytest.mark.parametrize("cls,kwargs", LOSSES)
def test_config_round_trip(tiny_encoder, tiny_block, cls, kwargs):
    features, labels = tiny_block
    tiny_encoder.eval()
    loss = cls(tiny_encoder, **kwargs)
    again = cls(tiny_encoder, **loss.get_config_dict())
    assert again.get_config_dict() == loss.get_config_dict()
    with torch.no_grad():
        assert again(features, labels).item() == pytest.approx(loss(features, labels).item())


def test_combined_loss_is_the_weighted_sum(tiny_encoder, tiny_block):
    features, labels = tiny_block
    tiny_encoder.eval()
    with torch.no_grad():
        combined = InfluenceDistillLoss(
            tiny_encoder, pearson_weight=0.3, kl_weight=1.0, temperature=0.05
        )(features, labels).item()
        pearson = PearsonLoss(tiny_encoder)(features, labels).item()
        kl = SoftmaxKLLoss(tiny_encoder, temperature=0.05)(features, labels).item()
        with_aggregate = InfluenceDistillLoss(
            tiny_encoder, pearson_weight=0.3, kl_weight=1.0, temperature=0.05, aggregate_weight=0.7
        )
        with_aggregate = with_aggregate(features, labels).item()
        scores = block_scores(tiny_encoder, features)
        aggregate = aggregated_pearson_loss(scores, labels).item()
    assert combined == pytest.approx(0.3 * pearson + kl, rel=1e-5)
    assert with_aggregate == pytest.approx(0.3 * pearson + kl + 0.7 * aggregate, rel=1e-5)
    assert aggregate > 0.01  # the term is not a zero added to the sum
    assert InfluenceDistillLoss(tiny_encoder).get_config_dict() == {
        "pearson_weight": 0.3,
        "kl_weight": 1.0,
        "temperature": 0.05,
        "target_temperature": 0.05,
        "aggregate_weight": 0.0,
    }


def test_losses_refuse_bad_settings(tiny_encoder, tiny_block):
    with pytest.raises(ValueError, match="not all 0"):
        InfluenceDistillLoss(tiny_encoder, pearson_weight=0, kl_weight=0)
    with pytest.raises(ValueError, match=">= 0"):
        InfluenceDistillLoss(tiny_encoder, aggregate_weight=-0.5)
    with pytest.raises(ValueError, match=">= 0"):
        InfluenceDistillLoss(tiny_encoder, pearson_weight=-1)
    with pytest.raises(ValueError, match="temperatures"):
        SoftmaxKLLoss(tiny_encoder, temperature=0.1, target_temperature=-1)
    features, labels = tiny_block
    with pytest.raises(ValueError, match="two feature dicts"):
        PearsonLoss(tiny_encoder)(features[:1], labels)
