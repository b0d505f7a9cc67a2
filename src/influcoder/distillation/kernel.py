"""The kernel head: kernel ridge regression from encoder features to the gradients'
principal coordinates, in closed form.

The linear head (:mod:`influcoder.distillation.linear`) saturates: at 500 x 1,000 a linear map of
the two-view features fitted on the held-out samples themselves reached per-anchor Spearman
0.53, the fitted one 0.47. Kernel ridge fits a smooth nonlinear map with the same targets and
the same closed form::

    f(x) = k(x, X) C + mu,   C = (K + alpha I)^-1 (Z - mu),   K = k(X, X)

with ``k(a, b) = exp(-gamma ||a - b||^2)`` and the training samples ``X`` as anchors. ``gamma``
is set relative to the data's scale: ``factor / median squared distance`` between training
features, so one grid of factors (:data:`DEFAULT_GAMMA_FACTORS`) suits one view or two, any
encoder. One eigendecomposition of ``K`` per gamma gives every alpha (:class:`KernelRidge`).

Cost: ``O(n^2 * d)`` for the kernel and ``O(n^3)`` for its eigendecomposition (1,500 samples:
about a second per gamma on one core); the head keeps the ``n`` anchors (``n * d`` floats) and
applies ``k(x, X)`` per encoded sample, ``O(n * d)``: for 1,500 anchors of 768 dims about the
cost of the linear head times 12, still far below one pass of the encoder. Above
:data:`MAX_KERNEL_SAMPLES` training samples the kernel is approximated on landmarks
(:mod:`influcoder.distillation.landmarks`), which the head then keeps as its anchors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from influcoder.distillation.landmarks import LandmarkRidge, choose_landmarks, median_scale
from influcoder.encoders.heads import SavedHead, rbf_kernel, squared_distances

#: gamma = factor / (median squared distance of the training features), and the kernel ridge's
#: strengths. On the 500 x 1,000 stores' cross-validation folds the choices were inside this
#: grid: factor 2, alpha 1 for the two-view features (see docs/DISTILLATION.md, "A kernel head").
DEFAULT_GAMMA_FACTORS = (0.5, 1.0, 2.0, 4.0, 8.0)
DEFAULT_KERNEL_ALPHAS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
#: Above this many training samples (pool + queries) the ``n x n`` kernel is not formed: the
#: head is fitted on landmarks instead.
MAX_KERNEL_SAMPLES = 5000
_MEDIAN_ROWS = 2000  # rows the median distance is estimated on (a seeded subset beyond it)


def median_sq_distance(sq: np.ndarray, seed: int = 0) -> float:
    """The median of a square matrix ``sq`` of squared distances between distinct rows (of a
    seeded subset of :data:`_MEDIAN_ROWS` rows when there are more); 1.0 when all coincide."""
    if len(sq) > _MEDIAN_ROWS:
        keep = np.sort(np.random.default_rng(seed).choice(len(sq), _MEDIAN_ROWS, replace=False))
        sq = sq[np.ix_(keep, keep)]
    off = sq[np.triu_indices(len(sq), k=1)]
    m = float(np.median(off)) if off.size else 0.0
    return m if m > 0 else 1.0


class KernelRidge:
    """Kernel ridge of ``z`` on the training rows whose squared distances are ``sq``, for one
    ``gamma``; :meth:`coef` for any alpha, from one eigendecomposition of the kernel matrix."""

    def __init__(self, sq: np.ndarray, z: np.ndarray, gamma: float):
        self.gamma = gamma
        self.mean = z.mean(axis=0)
        self.evals, self.evecs = np.linalg.eigh(np.exp(-gamma * sq))
        self.evals = np.clip(self.evals, 0.0, None)  # K is PSD; round-off only
        self.projected = self.evecs.T @ (z - self.mean)

    def coef(self, alpha: float) -> np.ndarray:
        """``(K + alpha I)^-1 (Z - mu)``, ``[n, k]``."""
        return self.evecs @ (self.projected / (self.evals + alpha)[:, None])


@dataclass
class KernelHead:
    """A fitted kernel head: ``head(e) = k(e, anchors) @ coef + bias``, compared by ``similarity``.

    ``validation`` maps each ``(gamma factor, alpha)`` tried to its cross-validated per-anchor
    Spearman; the other fields as :class:`~influcoder.distillation.linear.LinearHead`'s.
    """

    anchors: np.ndarray
    coef: np.ndarray
    bias: np.ndarray
    gamma: float
    gamma_factor: float
    alpha: float
    components: int
    validation: dict[tuple[float, float], float] = field(default_factory=dict)
    encoder_validation: float = float("nan")
    similarity: str = "cosine"
    similarity_validation: dict[str, dict[str, float]] = field(default_factory=dict)
    kinds_validation: dict[str, float] = field(default_factory=dict)
    approximation: str = "exact"
    directions: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __call__(self, embeddings) -> np.ndarray:
        return rbf_kernel(embeddings, self.anchors, self.gamma) @ self.coef + self.bias

    def saved(self) -> SavedHead:
        """The head as a multi-view encoder directory saves and applies it."""
        return SavedHead(
            "kernel",
            {"anchors": self.anchors, "coef": self.coef, "bias": self.bias},
            float(self.gamma),
        )

    def card(self) -> dict:
        return {
            "kind": "kernel",
            "alpha": self.alpha,
            "gamma": self.gamma,
            "gamma_factor": self.gamma_factor,
            "anchors": int(self.anchors.shape[0]),
            "approximation": self.approximation,
            "components": self.components,
            "similarity": self.similarity,
            "similarity_validation": self.similarity_validation,
            "kinds_validation_per_anchor_spearman": self.kinds_validation,
            "in_features": int(self.anchors.shape[1]),
            "selection": "per-anchor Spearman, folds of pool x queries",
            "validation_per_anchor_spearman": {
                f"gamma_factor={f:g},alpha={a:g}": v for (f, a), v in self.validation.items()
            },
            "encoder_validation_per_anchor_spearman": self.encoder_validation,
        }


def kernel_predictions(
    x: np.ndarray,
    z: np.ndarray,
    xs: np.ndarray,
    alphas: Sequence[float],
    factors: Sequence[float],
    *,
    landmarks: int | None = None,
    seed: int = 0,
) -> Iterator[tuple[tuple, np.ndarray]]:
    """``(("kernel", factor, alpha), predictions for xs)`` for every setting, fitted on
    ``(x, z)``; gamma is ``factor`` over the median squared distance between rows of ``x``.
    ``landmarks``: ``None``, the exact kernel; ``m``, kernel ridge on ``m`` seeded landmarks
    (:mod:`influcoder.distillation.landmarks`), never forming ``k(x, x)``."""
    if landmarks is not None:
        scale = median_scale(x)
        anchors = x[choose_landmarks(len(x), landmarks, seed)].astype(np.float32)
        for factor in map(float, factors):
            fit = LandmarkRidge(x, anchors, z, factor / scale)
            alphas = list(map(float, alphas))
            for alpha, pred in fit.predictions(xs, alphas).items():
                yield ("kernel", factor, alpha), pred
        return
    sq, sq_held = squared_distances(x, x), squared_distances(xs, x)  # once for every gamma
    scale = median_sq_distance(sq)
    for factor in map(float, factors):
        fit = KernelRidge(sq, z, factor / scale)
        k = np.exp(-fit.gamma * sq_held)
        for alpha in map(float, alphas):
            yield ("kernel", factor, alpha), k @ fit.coef(alpha) + fit.mean


def fit_kernel_head(
    x: np.ndarray,
    z: np.ndarray,
    factor: float,
    alpha: float,
    *,
    landmarks: int | None = None,
    seed: int = 0,
    **fields,
) -> KernelHead:
    """The kernel head on every sample ``(x, z)`` at one setting, exact or (``landmarks``) on
    that many seeded landmarks as :func:`kernel_predictions`; ``fields`` fill the rest."""
    if landmarks is not None:
        anchors = x[choose_landmarks(len(x), landmarks, seed)].astype(np.float32)
        fit = LandmarkRidge(x, anchors, z, factor / median_scale(x))
        return KernelHead(
            anchors,
            fit.coef(alpha),
            fit.mean,
            fit.gamma,
            factor,
            alpha,
            int(z.shape[1]),
            approximation="nystroem",
            **fields,
        )
    anchors = x.astype(np.float32)  # as saved: the fit and the saved head see the same anchors
    fit = KernelRidge(
        squared_distances(anchors, anchors), z, factor / median_sq_distance(squared_distances(x, x))
    )
    return KernelHead(
        anchors, fit.coef(alpha), fit.mean, fit.gamma, factor, alpha, int(z.shape[1]), **fields
    )
