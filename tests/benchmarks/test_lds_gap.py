"""``benchmarks/lds_gap.py``'s five score matrices, against what each must equal: with every
direction kept the projection changes no cosine; a perfect head's predictions make the four
head rows one matrix; each swap uses the true side it names."""

from __future__ import annotations

import numpy as np
import pytest

from influcoder.distillation.linear import principal_directions
from influcoder.similarity import cosine_matrix, unit_rows

from .test_bench_peers import _bench


def test_gap_scores_split_the_gap_as_named():
    rng = np.random.default_rng(0)
    gp, gt, gq = rng.normal(size=(12, 5)), rng.normal(size=(6, 5)), rng.normal(size=(4, 5))
    gap_scores = _bench("lds_gap").gap_scores

    full = gap_scores(gp, gt, gq, rng.normal(size=(12, 5)), rng.normal(size=(4, 5)), 5)
    np.testing.assert_allclose(full["projected"], full["gradient"], atol=1e-6)
    np.testing.assert_allclose(full["gradient"], cosine_matrix(gp, gq), atol=1e-6)

    v = principal_directions(np.vstack([gp, gt]), 3)
    zp, zq = unit_rows(gp) @ v.T, unit_rows(gq) @ v.T
    perfect = gap_scores(gp, gt, gq, 2 * zp, 3 * zq, 3)  # scale is no matter to a cosine
    for name in ("true query", "true pool", "encoder"):
        np.testing.assert_allclose(perfect[name], perfect["projected"], atol=1e-6)
    assert not np.allclose(perfect["projected"], perfect["gradient"])  # 3 of 5 directions

    pool_pred, query_pred = rng.normal(size=(12, 3)), rng.normal(size=(4, 3))
    mixed = gap_scores(gp, gt, gq, pool_pred, query_pred, 3)
    np.testing.assert_allclose(mixed["true query"], cosine_matrix(pool_pred, zq), atol=1e-6)
    np.testing.assert_allclose(mixed["true pool"], cosine_matrix(zp, query_pred), atol=1e-6)
    np.testing.assert_allclose(mixed["encoder"], cosine_matrix(pool_pred, query_pred), atol=1e-6)


def test_paired_difference_is_the_difference_of_lds_with_a_paired_interval():
    from influcoder.validation.effects import lds

    rng = np.random.default_rng(1)
    subsets = [rng.choice(10, 5, replace=False) for _ in range(8)]
    losses = rng.normal(size=(8, 6))
    a, b = rng.normal(size=(10, 6)), rng.normal(size=(10, 6))
    paired_difference = _bench("lds_gap").paired_difference
    d, low, high = paired_difference(a, b, subsets, losses, n_boot=200)
    assert d == pytest.approx(lds(a, subsets, losses)["lds"] - lds(b, subsets, losses)["lds"])
    assert low <= d <= high and low < high
    assert paired_difference(a, a, subsets, losses, n_boot=50) == (0.0, 0.0, 0.0)
