"""Reading one query's scores over the whole pool: its top rows, where a score stands among
all of them (percentile), and their histogram. Shared by the encoder side (service.py) and
the gradient side (ground_truth.py), so both rank the same way."""

from __future__ import annotations

import numpy as np

#: Up to this many scores are placed by direct comparison with the pool (``k x n``
#: booleans); more are placed by binary search in a sorted copy.
_COMPARE_MAX = 64
#: Every this many rows form the sample whose k-th best score bounds the pool's (top_rows).
_STRIDE = 32


def top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` highest scores, best first (ties: lower row first, as everywhere in
    influcoder). Rows scoring ``-inf`` (masked out) are never returned.

    Exact, and about 30x faster than a partition of the whole pool: the ``k``-th best score
    of every ``_STRIDE``-th row is a lower bound of the pool's ``k``-th best (those ``k`` rows
    are pool rows), so only the rows at or above it (about ``k * _STRIDE``) are ranked."""
    sub = scores[::_STRIDE]
    bound = np.partition(sub, len(sub) - k)[len(sub) - k] if k <= len(sub) else -np.inf
    rows = np.flatnonzero(scores >= bound) if bound > -np.inf else np.flatnonzero(scores > -np.inf)
    k = min(k, len(rows))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if len(rows) > k:  # keep the k best and every tie of the k-th, then order exactly
        values = scores[rows]
        rows = rows[values >= np.partition(values, len(rows) - k)[len(rows) - k]]
    return rows[np.lexsort((rows, -scores[rows]))][:k].astype(np.int64)


def percentiles(pool_scores: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each value, the share of the pool (in percent) scoring at or below it: 100 for
    the pool's best sample, 50 for its median one."""
    values = np.asarray(values, dtype=pool_scores.dtype)
    if len(values) <= _COMPARE_MAX:
        below = np.count_nonzero(pool_scores[None, :] <= values[:, None], axis=1)
    else:
        below = np.searchsorted(np.sort(pool_scores), values, side="right")
    return 100.0 * below / len(pool_scores)


def histogram(pool_scores: np.ndarray, bins: int, lo: float, hi: float) -> dict | None:
    """Bin counts of the scores over their range ``lo`` to ``hi`` (their minimum and
    maximum), ``{"edges": bins + 1 floats, "counts": bins ints}``; None when ``bins`` is 0."""
    if bins <= 0:
        return None
    counts, edges = np.histogram(pool_scores, bins=bins, range=(lo, hi) if hi > lo else None)
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist()}
