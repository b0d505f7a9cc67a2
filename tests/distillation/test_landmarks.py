"""The kernel head on landmarks (Nystroem): exactly kernel ridge when every sample is a
landmark, the subset-of-regressors solution spelled out with fewer, and no ``n x n`` matrix on
a large case."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from influcoder.distillation import kernel, landmarks
from influcoder.distillation.head_fit import fit_head
from influcoder.distillation.kernel import fit_kernel_head, kernel_predictions
from influcoder.distillation.landmarks import LandmarkRidge, choose_landmarks, median_scale
from influcoder.distillation.settings import DEFAULT_HEAD_LANDMARKS

from .test_kernel import _nonlinear_geometry


def _data(n=40, n_new=15, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + n_new, d))
    z = np.sin(x @ rng.standard_normal((d, k))) + 1.0
    return x[:n], z[:n], x[n:]


@pytest.mark.parametrize("alpha", [1e-2, 0.3, 10.0])
def test_every_sample_a_landmark_is_exact_kernel_ridge(alpha):
    x, z, new = _data()
    gamma = 0.5 / median_scale(x)
    fit = LandmarkRidge(x, x, z, gamma)
    k = np.exp(-gamma * ((x[:, None] - x[None]) ** 2).sum(-1))
    direct = np.linalg.solve(k + alpha * np.eye(len(x)), z - z.mean(0))
    np.testing.assert_allclose(fit.coef(alpha), direct, rtol=1e-6, atol=1e-8)
    k_new = np.exp(-gamma * ((new[:, None] - x[None]) ** 2).sum(-1))
    np.testing.assert_allclose(
        fit.predictions(new, [alpha])[alpha], k_new @ direct + z.mean(0), rtol=1e-6, atol=1e-8
    )


def test_fewer_landmarks_solve_the_subset_of_regressors_problem():
    """``C = (K_nm^T K_nm + alpha K_mm)^-1 K_nm^T (Z - mu)``, solved directly."""
    x, z, new = _data(n=60)
    idx = choose_landmarks(len(x), 17, seed=2)
    assert len(idx) == 17 and len(set(idx)) == 17 and np.array_equal(idx, np.sort(idx))
    assert np.array_equal(idx, choose_landmarks(len(x), 17, seed=2))
    gamma, alpha = 0.7 / median_scale(x), 0.05
    fit = LandmarkRidge(x, x[idx], z, gamma)
    knm = np.exp(-gamma * ((x[:, None] - x[idx][None]) ** 2).sum(-1))
    kmm = knm[idx]
    direct = np.linalg.solve(knm.T @ knm + alpha * kmm, knm.T @ (z - z.mean(0)))
    np.testing.assert_allclose(fit.coef(alpha), direct, rtol=1e-5, atol=1e-7)


def test_the_landmark_path_with_every_sample_equals_the_exact_path():
    x, z, new = _data()
    factors, alphas = (0.5, 2.0), (0.01, 1.0)
    exact = dict(kernel_predictions(x, z, new, alphas, factors))
    approx = dict(kernel_predictions(x, z, new, alphas, factors, landmarks=len(x) + 5))
    assert exact.keys() == approx.keys()
    for setting in exact:  # the landmarks are float32, as the saved anchors
        np.testing.assert_allclose(approx[setting], exact[setting], rtol=1e-5, atol=1e-6)
    head, ref = (fit_kernel_head(x, z, 2.0, 0.01, landmarks=m) for m in (len(x), None))
    assert head.approximation == "nystroem" and ref.approximation == "exact"
    assert head.gamma == pytest.approx(ref.gamma) and np.array_equal(head.anchors, ref.anchors)
    np.testing.assert_allclose(head(new), ref(new), rtol=1e-4, atol=1e-5)
    assert DEFAULT_HEAD_LANDMARKS == landmarks.DEFAULT_LANDMARKS


def _peak_of_a_landmark_head(n_pool, n_query=200):
    xp, gp, xq, gq = _nonlinear_geometry(n_pool, n_query, d=3, dim=16, seed=3)
    tracemalloc.start()
    try:
        head = fit_head(
            xp,
            gp,
            xq,
            gq,
            components=8,
            folds=2,
            kinds=("kernel",),
            gamma_factors=(1.0,),
            kernel_alphas=(0.1, 1.0),
            landmarks=300,
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert head.approximation == "nystroem" and head.anchors.shape == (300, 3)
    assert head.kinds_validation["kernel"] > head.encoder_validation + 0.1
    return peak


def test_a_head_above_the_exact_size_runs_on_landmarks_in_bounded_memory():
    """Above the real limit the kernel head is fitted on 300 landmarks: doubling the samples
    (5,200 -> 10,200) leaves the peak of numpy's allocations about where it was (the exact
    kernel's would grow 4x), far below one kernel over a fold (2,600 squared: 54 MB)."""
    assert 5000 + 200 > kernel.MAX_KERNEL_SAMPLES
    small, large = _peak_of_a_landmark_head(5000), _peak_of_a_landmark_head(10000)
    assert large < 1.3 * small, f"peaks {small / 1e6:.0f} and {large / 1e6:.0f} MB"
    assert large < 54e6, f"peak {large / 1e6:.0f} MB"
