"""Kernel ridge on landmarks (Nystroem): the kernel head above the size where the exact ``n x n``
kernel is formed (:data:`~influcoder.distillation.kernel.MAX_KERNEL_SAMPLES`).

``m`` landmarks ``L`` are a seeded sample of the training features. The head keeps the saved
form ``f(x) = k(x, L) C + mu`` (the landmarks are its anchors) and ``C`` minimises the ridge
loss in the Nystroem feature space ``phi(x) = k(x, L) W``, ``W = U S^-1/2`` from
``k(L, L) = U S U^T``::

    C = W (Phi^T Phi + alpha I)^-1 Phi^T (Z - mu)

With every training sample a landmark this is exactly kernel ridge, ``(K + alpha I)^-1 (Z - mu)``
(eigenvalues of ``k(L, L)`` below :data:`_EIGEN_FLOOR` of the largest are floored, as
scikit-learn's ``Nystroem`` does). ``Phi^T Phi`` is accumulated over row chunks, so the memory
is ``O(chunk * m + m^2)`` beside the features, never ``O(n^2)``; the time ``O(n * m * (d + m))``
per gamma, then one ``m x m`` eigendecomposition serves every alpha.
"""

from __future__ import annotations

import numpy as np

from influcoder.encoders.heads import rbf_kernel, squared_distances

#: Landmarks of the kernel head above the exact size (``--head-landmarks``).
DEFAULT_LANDMARKS = 2000
#: Rows of ``k(X, L)`` formed at a time.
CHUNK_ROWS = 2048
_EIGEN_FLOOR = 1e-12
_MEDIAN_ROWS = 2000  # as kernel.py's: rows the median distance is estimated on
_MEDIAN_BLOCK = 256


def choose_landmarks(n: int, m: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``min(m, n)`` of ``n`` rows, a seeded sample without replacement (all
    rows when ``m >= n``)."""
    if m < 1:
        raise ValueError(f"landmarks must be >= 1, got {m}")
    if m >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False))


def median_scale(x: np.ndarray, seed: int = 0) -> float:
    """The median squared distance between distinct rows of ``x`` (of a seeded subset of
    :data:`_MEDIAN_ROWS` rows when there are more, drawn as
    :func:`~influcoder.distillation.kernel.median_sq_distance` draws them); 1.0 when all
    coincide. Holds the distances above the diagonal and a block of rows at a time, never the
    square matrix."""
    if len(x) > _MEDIAN_ROWS:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), _MEDIAN_ROWS, replace=False))
        x = x[keep]
    n = len(x)
    off = np.empty(n * (n - 1) // 2)  # the distances above the diagonal, a row block at a time
    filled = 0
    for start in range(0, n, _MEDIAN_BLOCK):
        rows = np.arange(start, min(start + _MEDIAN_BLOCK, n))
        block = squared_distances(x[rows], x)[np.arange(n)[None, :] > rows[:, None]]
        off[filled : filled + block.size] = block
        filled += block.size
    m = float(np.median(off, overwrite_input=True)) if off.size else 0.0
    return m if m > 0 else 1.0


class LandmarkRidge:
    """Kernel ridge of ``z`` on the rows ``x`` through the landmarks ``anchors`` for one
    ``gamma``; :meth:`coef` gives ``C`` (``[m, k]``, on ``k(., anchors)``) for any alpha."""

    def __init__(self, x: np.ndarray, anchors: np.ndarray, z: np.ndarray, gamma: float):
        self.gamma, self.anchors = gamma, anchors
        self.mean = z.mean(axis=0)
        s, u = np.linalg.eigh(rbf_kernel(anchors, anchors, gamma))
        s = np.maximum(s, _EIGEN_FLOOR * max(float(s.max()), _EIGEN_FLOOR))
        self.whiten = u / np.sqrt(s)  # W
        m = len(anchors)
        gram, rhs = np.zeros((m, m)), np.zeros((m, z.shape[1]))
        for start in range(0, len(x), CHUNK_ROWS):
            phi = self.features(x[start : start + CHUNK_ROWS])
            gram += phi.T @ phi
            rhs += phi.T @ (z[start : start + CHUNK_ROWS] - self.mean)
        self.evals, self.evecs = np.linalg.eigh(gram)
        self.evals = np.clip(self.evals, 0.0, None)  # a Gram matrix; round-off only
        self.projected = self.evecs.T @ rhs

    def features(self, x: np.ndarray) -> np.ndarray:
        """The Nystroem features ``k(x, anchors) W``, ``[len(x), m]``."""
        return rbf_kernel(x, self.anchors, self.gamma) @ self.whiten

    def coef(self, alpha: float) -> np.ndarray:
        """``C`` at ``alpha``, ``[m, k]``: the head is ``k(x, anchors) @ C + mean``."""
        return self.whiten @ (self.evecs @ (self.projected / (self.evals + alpha)[:, None]))

    def predictions(self, xs: np.ndarray, alphas) -> dict[float, np.ndarray]:
        """``alpha -> [len(xs), k]`` predictions for the rows ``xs``, formed chunk by chunk."""
        out = {a: np.empty((len(xs), len(self.mean))) for a in alphas}
        for start in range(0, len(xs), CHUNK_ROWS):
            rotated = self.features(xs[start : start + CHUNK_ROWS]) @ self.evecs
            for a in alphas:
                out[a][start : start + CHUNK_ROWS] = (
                    rotated @ (self.projected / (self.evals + a)[:, None]) + self.mean
                )
        return out
