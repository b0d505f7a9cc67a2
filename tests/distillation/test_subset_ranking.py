"""The subset-ranking loss and the set poolings against slow loops over queries, pairs and
members (the references), and the behaviour the loss exists for."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from influcoder.distillation.losses import subset_ranking_loss
from influcoder.distillation.pooling import AttentionPooling, SumPooling, make_pooling


def loop_loss(scores, losses, temperature=1.0, max_weight=10.0):
    """The loss one query and one pair at a time, in plain Python floats."""
    scores, losses = np.asarray(scores, float), np.asarray(losses, float)
    runs, queries = losses.shape
    total = weight_sum = 0.0
    for q in range(queries):
        column = losses[:, q]
        mean = sum(column) / runs
        std = math.sqrt(sum((v - mean) ** 2 for v in column) / runs) or 1.0
        t = [min(10.0, max(-10.0, -(v - mean) / std)) for v in column]
        for a in range(runs):
            for b in range(runs):
                if t[a] > t[b]:
                    w = min(t[a] - t[b], max_weight)
                    margin = (scores[a, q] - scores[b, q]) / temperature
                    total += w * math.log1p(math.exp(-margin))
                    weight_sum += w
    return total / weight_sum if weight_sum else 0.0


@pytest.mark.parametrize("temperature,max_weight", [(1.0, 10.0), (0.3, 0.5)])
def test_loss_equals_loop(temperature, max_weight):
    rng = np.random.default_rng(0)
    scores, losses = rng.normal(size=(6, 4)), rng.random((6, 4))
    losses[:, 1] = 0.7  # a query whose runs all tie: no pair
    losses[2, 2] = losses[3, 2]  # one tie inside a query
    got = subset_ranking_loss(
        torch.tensor(scores), torch.tensor(losses), temperature=temperature, max_weight=max_weight
    )
    assert got.item() == pytest.approx(loop_loss(scores, losses, temperature, max_weight), 1e-10)


def test_loss_orders_as_the_losses_do():
    losses = torch.tensor([[0.1], [0.5], [0.9]])
    right = subset_ranking_loss(torch.tensor([[3.0], [0.0], [-3.0]]), losses)
    wrong = subset_ranking_loss(torch.tensor([[-3.0], [0.0], [3.0]]), losses)
    chance = subset_ranking_loss(torch.zeros(3, 1), losses)
    assert chance.item() == pytest.approx(math.log(2))
    assert right.item() < chance.item() < wrong.item()


def test_loss_all_ties_is_zero_and_attached():
    scores = torch.randn(3, 2, requires_grad=True)
    loss = subset_ranking_loss(scores, torch.ones(3, 2))
    loss.backward()
    assert loss.item() == 0.0 and scores.grad is not None


def test_loss_refuses_bad_shapes():
    with pytest.raises(ValueError, match="one shape"):
        subset_ranking_loss(torch.zeros(3, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="temperature"):
        subset_ranking_loss(torch.zeros(3, 2), torch.zeros(3, 2), temperature=0)


def loop_pooling(members, pool, queries, weight=None, temperature=1.0):
    """Each subset's score for each query, member by member."""
    out = np.zeros((len(members), len(queries)))
    for r, row in enumerate(members):
        idx = [i for i, m in enumerate(row) if m]
        if weight is None:
            a = [1.0 / len(idx)] * len(idx)
        else:
            logits = [float(np.dot(weight, pool[i])) / temperature for i in idx]
            top = max(logits)
            e = [math.exp(v - top) for v in logits]
            a = [v / sum(e) for v in e]
        pooled = len(idx) * sum(ai * pool[i] for ai, i in zip(a, idx))
        for q, x in enumerate(queries):
            out[r, q] = float(np.dot(x, pooled))
    return out


def test_poolings_equal_loops():
    rng = np.random.default_rng(1)
    pool, queries = rng.normal(size=(7, 5)), rng.normal(size=(3, 5))
    members = (rng.random((4, 7)) < 0.5).astype(np.int64)
    members[:, 0] = 1
    args = [torch.tensor(members), torch.tensor(pool), torch.tensor(queries)]
    summed = SumPooling()(*args).numpy()
    np.testing.assert_allclose(summed, loop_pooling(members, pool, queries), rtol=1e-10)
    attention = AttentionPooling(5, temperature=0.5).double()
    np.testing.assert_allclose(attention(*args).detach().numpy(), summed, rtol=1e-10)  # w = 0
    with torch.no_grad():
        attention.weight.copy_(torch.tensor(rng.normal(size=5)))
    np.testing.assert_allclose(
        attention(*args).detach().numpy(),
        loop_pooling(members, pool, queries, attention.weight.detach().numpy(), 0.5),
        rtol=1e-10,
    )
    assert len(attention.config()["weight"]) == 5


def test_pooling_refuses_empty_subsets_and_unknown_kinds():
    with pytest.raises(ValueError, match="at least one member"):
        SumPooling()(torch.zeros(2, 3), torch.zeros(3, 4), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="pooling must be one of"):
        make_pooling("max", 4)


def test_attention_learns_to_weigh_the_member_that_matters():
    """Only member 0 of the pool lowers the loss of the query: the learned attention
    moves weight onto it."""
    rng = np.random.default_rng(2)
    pool = torch.tensor(rng.normal(size=(8, 4)))
    query = pool[:1].clone()
    members = torch.tensor((rng.random((12, 8)) < 0.5).astype(np.int64))
    members[:, 7] = 1
    losses = 1.0 - members[:, :1].double()  # helped exactly when member 0 was in
    pooling = AttentionPooling(4).double()
    opt = torch.optim.Adam(pooling.parameters(), lr=0.1)
    first = None
    for _ in range(60):
        loss = subset_ranking_loss(pooling(members, pool, query), losses)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
