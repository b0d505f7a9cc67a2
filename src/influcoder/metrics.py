"""How well one set of attribution scores agrees with another: pure functions on numpy arrays.

Every matrix here is laid out like the scores it judges: ``[n_pool, n_query]``, one row per
pool (training) sample and one column per query. ``gt`` is the ground truth (for instance the
gradient-influence scores) and ``pred`` the prediction being judged (for instance the distilled
encoder's cosine scores); both must have the same shape.

Three families of metric answer three different questions:

* **Rank correlation** (:func:`per_anchor_spearman`, :func:`pairwise_spearman`,
  :func:`aggregated_spearman`): does ``pred`` order things the way ``gt`` does? They differ in
  *what* is ordered: the pool for each query, every (pool, query) pair at once, or the pool by
  its influence averaged over all queries.
* **Top-k retrieval** (:func:`ndcg_at_k`, :func:`recall_at_k`): for each query, does ``pred``
  put the ``k`` pool samples that ``gt`` ranks highest near the top? This is what a user who
  only reads the top of an attribution list sees.
* **Planted-sample retrieval** (:func:`auprc`, :func:`precision_recall_curve`): given a
  boolean label per pool sample (say, the harmful samples planted into the pool), how well does
  one score per sample (see :func:`aggregate_scores`) find them? scikit-learn computes these;
  this module checks the input and orders the curve for plotting.

Ties: correlations give tied values their average rank, as scipy does. Top-k metrics need a
strict order, and break ties by pool index (lower index first), so results are deterministic;
a prediction that is constant over a column is then judged as if it ranked the pool by index.

Everything is computed in float64 and is vectorised over queries; nothing here needs torch.

Example::

    >>> import numpy as np
    >>> gt = np.array([[3.0, 1.0], [2.0, 2.0], [1.0, 3.0]])
    >>> pred = np.array([[0.9, 0.1], [0.5, 0.4], [0.1, 0.2]])
    >>> per_anchor_spearman(gt, pred)  # column 0 agrees (1.0), column 1 only partly (0.5)
    0.75
    >>> recall_at_k(gt, pred, k=1)     # query 0 finds its top sample, query 1 does not
    0.5
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from scipy.stats import rankdata

#: How one pool sample's scores over a set of queries become one score.
Aggregate = Literal["mean", "sum", "max"]
AGGREGATES: tuple[str, ...] = get_args(Aggregate)

#: The pool scores (:func:`aggregate_scores`) whose AUPRC an evaluation reports: the
#: attribution aggregates less ``sum``, which ranks the pool exactly as ``mean`` does and so
#: has the same AUPRC.
AUPRC_AGGREGATES: tuple[Aggregate, ...] = tuple(a for a in AGGREGATES if a != "sum")


def _finite(x, name: str, ndim: int, what: str) -> np.ndarray:
    """``x`` as a finite, non-empty float64 array of ``ndim`` dimensions, or a ValueError
    naming it (``what`` says which shape is expected)."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {what}, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty" + ("" if ndim == 1 else f" (shape {arr.shape})"))
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _vector(x, name: str) -> np.ndarray:
    """``x`` as a finite, non-empty 1-D float64 array, or a ValueError naming it."""
    return _finite(x, name, 1, "1-D")


def _matrix(x, name: str) -> np.ndarray:
    """``x`` as a finite, non-empty ``[n_pool, n_query]`` float64 array, or a ValueError."""
    return _finite(x, name, 2, "a 2-D [n_pool, n_query] matrix")


def _pair(gt, pred) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``gt`` and ``pred`` matrices of one shape."""
    gt, pred = _matrix(gt, "gt"), _matrix(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same shape, got {gt.shape} and {pred.shape}")
    return gt, pred


def _column_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``a`` with the same column of ``b``.

    A column that is constant in either input has no defined correlation: NaN.
    """
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    denom = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=0) / denom
    r[denom == 0] = np.nan
    # Rounding can push a perfect correlation a hair past 1.
    return np.clip(r, -1.0, 1.0)


def spearman(a, b) -> float:
    """Spearman's rank correlation of two 1-D arrays of equal length.

    Both inputs are ranked (tied values share their average rank) and the result is the
    Pearson correlation of the ranks; it equals ``scipy.stats.spearmanr(a, b).statistic``.

    Returns:
        A float in [-1, 1], or NaN when either input is constant (including length 1),
        since then no ordering exists to agree with.

    Raises:
        ValueError: if the inputs are not 1-D, empty, of different lengths, or not finite.
    """
    a, b = _vector(a, "a"), _vector(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same length, got {a.size} and {b.size}")
    return float(_column_pearson(rankdata(a)[:, None], rankdata(b)[:, None])[0])


def column_spearman(gt, pred) -> np.ndarray:
    """The Spearman correlation of each column of ``gt`` with the same column of ``pred``
    (one per query): NaN for a column that is constant in either, where no ordering exists to
    agree with. The callers decide what such a column counts as."""
    gt, pred = _pair(gt, pred)
    return _column_pearson(rankdata(gt, axis=0), rankdata(pred, axis=0))


def per_anchor_spearman(gt, pred) -> float:
    """Mean over queries of the Spearman correlation between ``gt`` and ``pred`` over the pool.

    For each query (column) the pool samples are ranked by ``gt`` and by ``pred`` and the two
    rankings correlated; the result is the mean over queries. This asks "for a given query,
    does ``pred`` order the training samples like ``gt``?", the question attribution serves.

    A column that is constant in ``gt`` or ``pred`` has no defined correlation and counts as
    0 (no agreement), so it pulls the mean towards 0 instead of vanishing from it.
    """
    return float(np.nan_to_num(column_spearman(gt, pred), nan=0.0).mean())


def pairwise_spearman(gt, pred) -> float:
    """Spearman correlation over all ``n_pool * n_query`` (pool, query) pairs at once.

    Unlike :func:`per_anchor_spearman` this also rewards getting the *scale* of each query's
    scores right relative to other queries: a query whose scores are all larger in ``gt``
    must also have larger scores in ``pred``. NaN when either matrix is constant.
    """
    gt, pred = _pair(gt, pred)
    return spearman(gt.ravel(), pred.ravel())


def aggregated_spearman(gt, pred) -> float:
    """Spearman correlation over the pool of each sample's score averaged over the queries.

    Each matrix is reduced to its row means (one overall influence per pool sample, see
    :func:`aggregate_scores`) and the two vectors are correlated. It asks "which training
    samples matter most for this whole query set?". NaN when either row-mean vector is
    constant.
    """
    gt, pred = _pair(gt, pred)
    return spearman(gt.mean(axis=1), pred.mean(axis=1))


def _check_k(k, n_pool: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, got {k!r}")
    if not 1 <= k <= n_pool:
        raise ValueError(f"k must be between 1 and n_pool={n_pool}, got {k}")
    return int(k)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """``[k, n_query]`` pool indices of each column's ``k`` highest scores, best first.

    The sort is stable on the negated scores, so ties go to the lower pool index.
    """
    return np.argsort(-scores, axis=0, kind="stable")[:k]


def _relevance_of_predicted_top_k(gt: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """``[k, n_query]`` booleans: is the i-th predicted sample of a query in its gt top-k?"""
    n_query = gt.shape[1]
    in_gt_top = np.zeros(gt.shape, dtype=bool)
    in_gt_top[_top_k(gt, k), np.arange(n_query)] = True
    return in_gt_top[_top_k(pred, k), np.arange(n_query)]


def ndcg_at_k(gt, pred, k: int) -> float:
    """Mean over queries of NDCG@k with binary relevance taken from the ground truth's top k.

    Definition, for one query (column): let ``R`` be the ``k`` pool samples with the highest
    ``gt`` scores (the relevant set, ``|R| = k``), and let ``p_1, ..., p_k`` be the ``k`` pool
    samples with the highest ``pred`` scores, best first. Then::

        DCG@k  = sum_{i=1..k} [p_i in R] / log2(i + 1)
        IDCG@k = sum_{i=1..k}        1   / log2(i + 1)   (all k predicted samples relevant)
        NDCG@k = DCG@k / IDCG@k                           (in [0, 1])

    Unlike :func:`recall_at_k`, NDCG rewards placing the relevant samples *early* within
    the top k. The graded ``gt`` values themselves are not used as gains: only membership of
    the top k counts. Ties in either matrix are broken by pool index (lower first).

    Args:
        gt: ``[n_pool, n_query]`` ground-truth scores.
        pred: ``[n_pool, n_query]`` predicted scores.
        k: how many top samples to judge, ``1 <= k <= n_pool``.
    """
    gt, pred = _pair(gt, pred)
    k = _check_k(k, gt.shape[0])
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    relevant = _relevance_of_predicted_top_k(gt, pred, k)
    dcg = (relevant * discounts[:, None]).sum(axis=0)
    return float((dcg / discounts.sum()).mean())


def recall_at_k(gt, pred, k: int) -> float:
    """Mean over queries of ``|pred top-k ∩ gt top-k| / k``.

    For each query, the fraction of the ``k`` pool samples that ``gt`` ranks highest which
    ``pred`` also puts in its top ``k``, regardless of their order there. Ties in either
    matrix are broken by pool index (lower first). Arguments as :func:`ndcg_at_k`.
    """
    gt, pred = _pair(gt, pred)
    k = _check_k(k, gt.shape[0])
    return float(_relevance_of_predicted_top_k(gt, pred, k).mean())


def _labels_and_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validated boolean labels and float scores of one length, with at least one positive."""
    raw = np.asarray(labels)
    if raw.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {raw.shape}")
    if raw.dtype != bool and not np.isin(raw, (0, 1)).all():
        raise ValueError(
            "labels must be booleans or 0/1, got other values: "
            f"{np.unique(raw[~np.isin(raw, (0, 1))])[:5].tolist()}"
        )
    positive = raw.astype(bool)
    scores = _vector(scores, "scores")
    if positive.shape != scores.shape:
        raise ValueError(
            f"labels and scores must have the same length, got {positive.size} and {scores.size}"
        )
    if not positive.any():
        raise ValueError("labels has no positive sample, so precision and recall are undefined")
    return positive, scores


def auprc(labels, scores) -> float:
    """Average precision of retrieving the positive samples by descending score.

    Walking down the thresholds (each distinct score, highest first; tied samples enter
    together), average precision is the precision at each threshold weighted by the recall it
    adds::

        AP = sum_n (R_n - R_{n-1}) * P_n,     R_0 = 0

    This is ``sklearn.metrics.average_precision_score`` (a step-wise area under the
    precision-recall curve, without interpolation), called after this module's checks so a
    bad input fails with the same messages as the other metrics. A random ranking scores
    about the fraction of positives; a perfect one scores 1.

    Args:
        labels: ``[n]`` booleans (or 0/1): which samples are the ones to find.
        scores: ``[n]`` scores, higher meaning "more likely a positive".

    Raises:
        ValueError: on a length mismatch, labels other than 0/1, or no positive label.
    """
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(*_labels_and_scores(labels, scores)))


def precision_recall_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """The precision-recall curve of retrieving the positive samples, for plotting.

    Returns:
        ``(precision, recall)``, two arrays ordered by increasing recall: the first point is
        ``(1.0, 0.0)`` (nothing retrieved yet, by convention) and point ``i >= 1`` holds the
        precision and recall after retrieving every sample scoring at least the ``i``-th
        highest distinct score (tied samples enter together). This is
        ``sklearn.metrics.precision_recall_curve``'s output in reverse order, so it reads
        left to right. Draw it as a step plot (``plt.step(recall, precision,
        where="post")``), whose area is :func:`auprc`.

    Raises:
        ValueError: as :func:`auprc`.
    """
    from sklearn.metrics import precision_recall_curve as sk_precision_recall_curve

    precision, recall, _ = sk_precision_recall_curve(*_labels_and_scores(labels, scores))
    return precision[::-1].copy(), recall[::-1].copy()


def aggregate_scores(scores, how: Aggregate = "mean") -> np.ndarray:
    """One score per pool sample from a ``[n_pool, n_query]`` matrix.

    ``how`` is one of the attribution aggregates
    (:data:`~influcoder.metrics.AGGREGATES`, as ``influcoder attribute``
    computes them), so an evaluation judges the pool scores a user gets:
    ``how="mean"`` averages over queries (steady influence on the whole query set);
    ``how="sum"`` is the mean times the number of queries (the same ranking);
    ``how="max"`` takes each sample's strongest score (a sample that matters a lot to a
    single query stands out, as a planted sample aimed at a few queries would).

    Returns:
        A float64 array of shape ``[n_pool]``.
    """
    if how not in AGGREGATES:
        raise ValueError(f"how must be one of {AGGREGATES}, got {how!r}")
    scores = _matrix(scores, "scores")
    if how == "max":
        return scores.max(axis=1)
    return scores.mean(axis=1) if how == "mean" else scores.sum(axis=1)


def bootstrap_interval(
    metric, gt, pred, *, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(gt, pred)`` over both pool samples and queries.

    Each resample draws the pool samples (rows) and the queries (columns) with replacement,
    independently, and recomputes ``metric`` on that block: the spread is what a test block of
    the same size drawn afresh from the same data would show. Use it to tell whether a figure
    on a small test block is clearly above or below a target.

    Args:
        metric: one of this module's matrix metrics, e.g. :func:`aggregated_spearman`.
        gt, pred: ``[n_pool, n_query]`` matrices of one shape.
        n_resamples: bootstrap resamples.
        level: coverage of the interval, in (0, 1).
        seed: seed of the resampling.

    Returns:
        ``(low, high)``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
        resampled figures.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    gt, pred = _pair(gt, pred)
    rng = np.random.default_rng(seed)
    n_pool, n_query = gt.shape
    figures = np.empty(n_resamples)
    for b in range(n_resamples):
        rows = rng.integers(n_pool, size=n_pool)
        cols = rng.integers(n_query, size=n_query)
        figures[b] = metric(gt[np.ix_(rows, cols)], pred[np.ix_(rows, cols)])
    low, high = np.quantile(figures, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
