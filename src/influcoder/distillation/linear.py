"""The linear head's maths: regression targets in the gradients' principal space and a
closed-form ridge map from encoder embeddings to them.

Distillation by ranking losses teaches an encoder *which* pool samples a query prefers; this
module instead regresses each sample's position in gradient space. The ground truth is the
cosine of L2-normalised gradient vectors, i.e. their dot products, and those vectors are
low-rank in what matters: their top principal directions keep almost all of each query's
ranking. So every sample that has a ground-truth vector (pool samples and queries alike:
regression needs no pairing) gives one regression example, embedding -> principal
coordinates, and a ridge regression fits the map in a fraction of a second.

1. **Targets** (:func:`principal_directions`): the rows are L2-normalised and their top
   ``components`` right singular vectors taken *without centring*. Centring would drop the
   direction that all gradients share, yet each query's ranking of the pool depends on it
   (``<g_p, g_q>`` includes ``<mean, g_q>``-like terms). The coordinates ``Z = G V_k`` keep
   the dot products of ``G`` projected onto those directions; no whitening, which measured
   worse (the small directions are mostly noise, and whitening blows them up).
2. **Ridge** (:func:`ridge`): ``W = argmin ||X_c W - Z_c||^2 + alpha ||W||^2`` on centred
   embeddings and targets, the intercept unpenalised; solved through the smaller of the two
   normal systems (``d x d`` or ``n x n``), exactly.

Costs: one encoder pass over the samples, then per fold a Gram matrix of the ``[n, dim]``
ground truth and its eigendecomposition (``O(n^2 * dim + n^3)``: ~5 s for 1,500 samples of
8192 dims on one core) and a ``min(n, d)``-sized solve per alpha. The ground-truth vectors
are held in memory as float64 (``n * dim * 8`` bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from influcoder.encoders.heads import SavedHead
from influcoder.similarity import unit_rows

#: Ridge strengths tried by default: the validation-best on the demo's stores was 1 to 10 for
#: both the untrained and the distilled MiniLM, never at either end of this grid.
DEFAULT_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
DEFAULT_COMPONENTS = 128


def check_rows(x, name: str) -> np.ndarray:
    """``x`` as a finite 2-D float64 array with at least one row, or a ValueError naming it."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def principal_directions(vectors, components: int) -> np.ndarray:
    """The top ``components`` right singular vectors of the L2-normalised, *uncentred* rows.

    Returns ``[k, dim]`` orthonormal rows, ``k = min(components, rank)``; the principal
    coordinates of a vector ``g`` are ``V @ unit(g)``.

    Computed from the eigenvectors of the smaller Gram matrix (``G G^T`` when there are fewer
    rows than dimensions, then ``V = U^T G / s``): one matrix product and an ``n x n``
    eigendecomposition, several times faster than a full SVD of ``G`` (1,500 x 8192: ~22 s
    for the SVD on one core). Squaring the matrix costs precision only in the smallest
    directions, which are cut: those below ``1e-6`` of the largest singular value are
    dropped.
    """
    if components < 1:
        raise ValueError(f"components must be >= 1, got {components}")
    g = unit_rows(check_rows(vectors, "vectors"))
    rows_first = g.shape[0] <= g.shape[1]
    evals, evecs = np.linalg.eigh(g @ g.T if rows_first else g.T @ g)
    order = np.argsort(evals)[::-1][:components]
    s = np.sqrt(np.clip(evals[order], 0.0, None))
    keep = s > 1e-6 * s[0]
    if not rows_first:
        return evecs[:, order[keep]].T
    return (g.T @ evecs[:, order[keep]] / s[keep]).T


def ridge(x, y, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge regression of ``y`` on ``x`` with an unpenalised intercept.

    Minimises ``||x W + b - y||^2 + alpha ||W||^2``. Centring ``x`` and ``y`` removes ``b``,
    then ``W = (X^T X + alpha I)^-1 X^T Y``, computed as ``X^T (X X^T + alpha I)^-1 Y`` when
    there are fewer samples than features (the same matrix, a smaller solve).

    Args:
        x: ``[n, d]`` inputs. y: ``[n, k]`` targets. alpha: strength, > 0.

    Returns:
        ``(weight [k, d], bias [k])`` in ``torch.nn.Linear``'s layout: ``pred = x @ weight.T +
        bias``.
    """
    x, y = check_rows(x, "x"), check_rows(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same rows, got {x.shape[0]} and {y.shape[0]}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    n, d = xc.shape
    if n < d:
        w = xc.T @ np.linalg.solve(xc @ xc.T + alpha * np.eye(n), yc)
    else:
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(d), xc.T @ yc)
    return w.T, y_mean - x_mean @ w


@dataclass
class LinearHead:
    """A fitted head: ``head(e) = e @ weight.T + bias``, compared by ``similarity``
    (``cosine`` or ``dot``).

    ``validation`` maps each alpha tried to its cross-validated per-anchor Spearman;
    ``encoder_validation`` is the encoder's own cosine on the same folds, for comparison;
    ``similarity_validation`` each similarity scored: its cross-validated ``per_anchor`` and
    ``aggregated`` Spearman at its best alpha.
    """

    weight: np.ndarray
    bias: np.ndarray
    alpha: float
    components: int
    validation: dict[float, float] = field(default_factory=dict)
    encoder_validation: float = float("nan")
    similarity: str = "cosine"
    similarity_validation: dict[str, dict[str, float]] = field(default_factory=dict)
    kinds_validation: dict[str, float] = field(default_factory=dict)
    #: the principal directions ``[k, dim]`` the head predicts coordinates on (saved as
    #: the encoder's gradient basis, :mod:`influcoder.encoders.basis`); None when unknown
    directions: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __call__(self, embeddings) -> np.ndarray:
        return check_rows(embeddings, "embeddings") @ self.weight.T + self.bias

    def saved(self) -> SavedHead:
        """The head as a multi-view encoder directory saves and applies it."""
        return SavedHead("linear", {"weight": self.weight, "bias": self.bias})

    def card(self) -> dict:
        """What the encoder card records about the head."""
        return {
            "kind": "linear",
            "alpha": self.alpha,
            "components": self.components,
            "similarity": self.similarity,
            "similarity_validation": self.similarity_validation,
            "kinds_validation_per_anchor_spearman": self.kinds_validation,
            "in_features": int(self.weight.shape[1]),
            "selection": "per-anchor Spearman, folds of pool x queries",
            "validation_per_anchor_spearman": {str(a): v for a, v in self.validation.items()},
            "encoder_validation_per_anchor_spearman": self.encoder_validation,
        }


def principal_coordinates(vectors, components: int) -> np.ndarray:
    """``[n, k]`` coordinates of the normalised ``vectors`` on their own top ``components``
    principal directions (:func:`principal_directions`): the regression targets."""
    return unit_rows(vectors) @ principal_directions(vectors, components).T
