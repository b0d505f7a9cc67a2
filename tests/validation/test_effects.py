"""Removal sets, removal effects and LDS against row-by-row references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from influcoder.validation.effects import (
    lds,
    lds_subsets,
    removal_count,
    removal_effect,
    removal_set,
)


def test_removal_set_is_the_top_fraction_by_mean_or_max():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 4))
    for how, pooled in (("mean", scores.mean(1)), ("max", scores.max(1))):
        expected = sorted(range(50), key=lambda i: (-pooled[i], i))[:5]
        assert removal_set(scores, 0.1, how).tolist() == expected


def test_removal_set_breaks_ties_by_index_and_never_removes_everything():
    scores = np.ones((6, 2))
    assert removal_set(scores, 0.5).tolist() == [0, 1, 2]
    assert removal_count(6, 0.99) == 5 and removal_count(6, 0.01) == 1


def test_removal_effect_by_hand():
    full = np.array([[1.0, 2.0, 3.0], [1.5, 2.5, 3.5]])
    removed = full + np.array([[0.3, 0.0, 0.3], [0.1, 0.2, -0.1]])
    effect = removal_effect(full, removed, n_boot=200)
    assert effect["delta"] == pytest.approx(0.8 / 6)
    assert effect["per_seed"] == pytest.approx([0.2, 0.2 / 3])
    assert effect["relative"] == pytest.approx((0.8 / 6) / full.mean())
    assert effect["low"] <= effect["delta"] <= effect["high"]
    with pytest.raises(ValueError, match="one shape"):
        removal_effect(full, removed[:, :2])


def test_lds_matches_scipy_per_query():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(30, 5))
    subsets = lds_subsets(30, 8, 0.5, seed=3)
    assert all(len(s) == 15 and len(set(s.tolist())) == 15 for s in subsets)
    losses = rng.normal(size=(8, 5))
    found = lds(scores, subsets, losses, n_boot=100)
    expected = []
    for j in range(5):
        predicted = [scores[s, j].sum() for s in subsets]
        expected.append(spearmanr(predicted, -losses[:, j]).statistic)
    assert found["per_query"] == pytest.approx(expected)
    assert found["lds"] == pytest.approx(np.mean(expected))
    assert found["low"] <= found["lds"] <= found["high"]


def test_lds_is_one_for_a_perfect_predictor_and_zero_without_preference():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(20, 3))
    subsets = lds_subsets(20, 6, 0.5, seed=0)
    losses = -np.stack([scores[s].sum(0) for s in subsets])  # loss falls with influence
    assert lds(scores, subsets, losses, n_boot=50)["lds"] == pytest.approx(1.0)
    assert lds(np.zeros_like(scores), subsets, losses, n_boot=50)["lds"] == 0.0
    with pytest.raises(ValueError, match="subsets, queries"):
        lds(scores, subsets, losses[:, :2])
