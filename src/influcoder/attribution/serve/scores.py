"""Reading one query's scores over the whole pool: its top rows, where a score stands among
all of them (percentile), and their histogram. Shared by the encoder side (service.py) and
the gradient side (ground_truth.py), so both rank the same way."""

from __future__ import annotations

import numpy as np

#: Up to this many scores are placed by direct comparison with the pool (``k x n``
#: booleans); more are placed by binary search in a sorted copy.
_COMPARE_MAX = 64


def top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` highest scores, best first (ties: lower row first, as everywhere in
    influcoder). Rows scoring ``-inf`` (masked out) are never returned."""
    finite = int(np.isfinite(scores).sum()) if np.isneginf(scores).any() else len(scores)
    k = min(k, finite)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return part[np.lexsort((part, -scores[part]))].astype(np.int64)


def percentiles(pool_scores: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each value, the share of the pool (in percent) scoring at or below it: 100 for
    the pool's best sample, 50 for its median one."""
    values = np.asarray(values, dtype=pool_scores.dtype)
    if len(values) <= _COMPARE_MAX:
        below = np.count_nonzero(pool_scores[None, :] <= values[:, None], axis=1)
    else:
        below = np.searchsorted(np.sort(pool_scores), values, side="right")
    return 100.0 * below / len(pool_scores)


def histogram(pool_scores: np.ndarray, bins: int) -> dict | None:
    """Bin counts of the scores over their range, ``{"edges": bins + 1 floats, "counts":
    bins ints}`` (None when ``bins`` is 0)."""
    if bins <= 0:
        return None
    counts, edges = np.histogram(pool_scores, bins=bins)
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist()}
