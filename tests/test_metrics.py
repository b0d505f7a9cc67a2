"""Metrics against scipy/sklearn and against small cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score
from sklearn.metrics import precision_recall_curve as sk_precision_recall_curve

from influcoder import metrics as m


@pytest.fixture()
def rng():
    return np.random.default_rng(0)


def tied(rng, shape, levels=4):
    """Random scores drawn from a few levels, so ties are common."""
    return rng.integers(0, levels, size=shape).astype(float)


# --- spearman ---------------------------------------------------------------------------


def test_spearman_hand_computed():
    # ranks of b: [1, 3, 2]; d^2 = [0, 1, 1]; rho = 1 - 6 * 2 / (3 * 8) = 0.5
    assert m.spearman([1, 2, 3], [10, 30, 20]) == pytest.approx(0.5)
    assert m.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


@pytest.mark.parametrize("levels", [3, 1000])
def test_spearman_matches_scipy_with_and_without_ties(rng, levels):
    for _ in range(20):
        a, b = tied(rng, 30, levels), tied(rng, 30, levels)
        assert m.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_spearman_ties_get_average_ranks():
    # a ranks [1.5, 1.5, 3]; Pearson of ([1.5, 1.5, 3], [1, 2, 3]) = sqrt(3)/2
    assert m.spearman([5, 5, 7], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)


def test_spearman_constant_input_is_nan():
    assert math.isnan(m.spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(m.spearman([4], [2]))


@pytest.mark.parametrize(
    "a, b, message",
    [
        ([1, 2, 3], [1, 2], "same length"),
        ([[1, 2]], [1, 2], "1-D"),
        ([], [], "empty"),
        ([1, np.nan], [1, 2], "NaN"),
    ],
)
def test_spearman_rejects_bad_input(a, b, message):
    with pytest.raises(ValueError, match=message):
        m.spearman(a, b)


# --- matrix correlations ----------------------------------------------------------------


def test_per_anchor_spearman_matches_scipy_per_column(rng):
    gt, pred = tied(rng, (25, 6)), rng.normal(size=(25, 6))
    expected = np.mean([spearmanr(gt[:, j], pred[:, j]).statistic for j in range(6)])
    assert m.per_anchor_spearman(gt, pred) == pytest.approx(expected, abs=1e-12)


def test_per_anchor_spearman_hand_computed():
    gt = np.array([[3.0, 1.0], [2.0, 2.0], [1.0, 3.0]])
    pred = np.array([[0.9, 0.1], [0.5, 0.4], [0.1, 0.2]])
    assert m.per_anchor_spearman(gt, pred) == pytest.approx((1.0 + 0.5) / 2)


def test_per_anchor_spearman_counts_constant_column_as_zero():
    gt = np.array([[1.0, 5.0, 1.0], [2.0, 5.0, 2.0], [3.0, 5.0, 3.0]])  # column 1 constant
    pred = np.array([[1.0, 1.0, 7.0], [2.0, 2.0, 7.0], [3.0, 3.0, 7.0]])  # column 2 constant
    # column 0 agrees perfectly; columns 1 and 2 are NaN in scipy and count as 0
    assert m.per_anchor_spearman(gt, pred) == pytest.approx(1 / 3)


def test_pairwise_spearman_matches_scipy_on_flattened(rng):
    gt, pred = tied(rng, (10, 4)), rng.normal(size=(10, 4))
    expected = spearmanr(gt.ravel(), pred.ravel()).statistic
    assert m.pairwise_spearman(gt, pred) == pytest.approx(expected, abs=1e-12)


def test_pairwise_differs_from_per_anchor_on_query_scale():
    # Within each query the order agrees, but query 1's gt scores are all above query 0's
    # while pred has it the other way round.
    gt = np.array([[1.0, 11.0], [2.0, 12.0], [3.0, 13.0]])
    pred = np.array([[11.0, 1.0], [12.0, 2.0], [13.0, 3.0]])
    assert m.per_anchor_spearman(gt, pred) == pytest.approx(1.0)
    assert m.pairwise_spearman(gt, pred) < 0


def test_aggregated_spearman_matches_scipy_on_row_means(rng):
    gt, pred = rng.normal(size=(15, 5)), rng.normal(size=(15, 5))
    expected = spearmanr(gt.mean(axis=1), pred.mean(axis=1)).statistic
    assert m.aggregated_spearman(gt, pred) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("fn", [m.per_anchor_spearman, m.pairwise_spearman, m.aggregated_spearman])
def test_correlations_reject_shape_mismatch_and_wrong_rank(fn):
    with pytest.raises(ValueError, match=r"same shape.*\(3, 2\) and \(2, 3\)"):
        fn(np.zeros((3, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2-D"):
        fn(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="pred contains NaN"):
        fn(np.zeros((2, 2)), np.full((2, 2), np.nan))


# --- top-k ------------------------------------------------------------------------------


def test_recall_at_k_hand_computed():
    gt = np.array([[4.0, 1.0], [3.0, 2.0], [2.0, 3.0], [1.0, 4.0]])
    pred = np.array([[4.0, 4.0], [1.0, 3.0], [3.0, 2.0], [2.0, 1.0]])
    # query 0: gt top-2 {0, 1}, pred top-2 {0, 2} -> 1/2
    # query 1: gt top-2 {3, 2}, pred top-2 {0, 1} -> 0/2
    assert m.recall_at_k(gt, pred, 2) == pytest.approx(0.25)
    assert m.recall_at_k(gt, gt, 2) == 1.0
    assert m.recall_at_k(gt, pred, 4) == 1.0


def test_ndcg_at_k_hand_computed():
    gt = np.array([[4.0, 1.0], [3.0, 2.0], [2.0, 3.0], [1.0, 4.0]])
    pred = np.array([[4.0, 4.0], [1.0, 3.0], [3.0, 2.0], [2.0, 1.0]])
    idcg = 1 + 1 / math.log2(3)
    # query 0: predicted order 0, 2, ...; relevant {0, 1}: gains [1, 0] -> DCG = 1
    # query 1: predicted order 0, 1, ...; relevant {3, 2}: gains [0, 0] -> DCG = 0
    assert m.ndcg_at_k(gt, pred, 2) == pytest.approx((1 / idcg + 0) / 2)
    # one relevant sample found first is worth more than the same found second
    gt_one = gt[:, :1]  # relevant {0, 1}
    pred_first = np.array([[4.0], [1.0], [3.0], [2.0]])  # predicted order 0, 2, ...
    pred_second = np.array([[3.0], [1.0], [4.0], [2.0]])  # predicted order 2, 0, ...
    assert m.ndcg_at_k(gt_one, pred_first, 2) == pytest.approx(1 / idcg)
    assert m.ndcg_at_k(gt_one, pred_second, 2) == pytest.approx((1 / math.log2(3)) / idcg)
    assert m.ndcg_at_k(gt, gt, 2) == pytest.approx(1.0)


def test_ndcg_and_recall_match_sklearn_ndcg_and_brute_force(rng):
    from sklearn.metrics import ndcg_score

    gt, pred = rng.normal(size=(20, 7)), rng.normal(size=(20, 7))
    k = 5
    recalls, gains = [], []
    for j in range(gt.shape[1]):
        relevant = set(np.argsort(-gt[:, j])[:k])
        top = np.argsort(-pred[:, j])[:k]
        recalls.append(len(relevant & set(top)) / k)
        gains.append([float(i in relevant) for i in range(gt.shape[0])])
    assert m.recall_at_k(gt, pred, k) == pytest.approx(np.mean(recalls))
    # sklearn's NDCG with the binary top-k membership as the true relevance
    expected = ndcg_score(np.array(gains), pred.T, k=k)
    assert m.ndcg_at_k(gt, pred, k) == pytest.approx(expected)


def test_top_k_ties_go_to_lower_pool_index():
    gt = np.array([[1.0], [1.0], [0.0]])  # tie: top-1 is sample 0
    pred = np.array([[0.0], [1.0], [1.0]])  # tie: top-1 is sample 1
    assert m.recall_at_k(gt, pred, 1) == 0.0
    assert m.recall_at_k(gt, np.full_like(gt, 5.0), 1) == 1.0  # constant: by index


@pytest.mark.parametrize("fn", [m.ndcg_at_k, m.recall_at_k])
def test_top_k_rejects_bad_k_and_shapes(fn):
    gt = np.zeros((4, 2))
    for bad in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match="k must be"):
            fn(gt, gt, bad)
    with pytest.raises(ValueError, match="same shape"):
        fn(gt, np.zeros((4, 3)), 1)


# --- planted-sample retrieval -----------------------------------------------------------


def test_auprc_hand_computed():
    # ranked by score: +, -, +, -  -> precision at the two positives: 1, 2/3; each adds 1/2
    labels = [1, 0, 1, 0]
    scores = [0.9, 0.8, 0.7, 0.1]
    assert m.auprc(labels, scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


@pytest.mark.parametrize("levels", [3, 1000])
def test_auprc_matches_sklearn_with_and_without_ties(rng, levels):
    for _ in range(20):
        labels = rng.random(40) < 0.3
        labels[0] = True
        scores = tied(rng, 40, levels)
        expected = average_precision_score(labels, scores)
        assert m.auprc(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_auprc_tied_scores_enter_together():
    # all tied: one threshold, precision = 1/4, recall 0 -> 1
    assert m.auprc([True, False, False, False], [1, 1, 1, 1]) == pytest.approx(0.25)


def test_precision_recall_curve_is_sklearns_reversed(rng):
    labels = rng.random(30) < 0.4
    labels[3] = True
    scores = tied(rng, 30, 6)
    precision, recall = m.precision_recall_curve(labels, scores)
    sk_precision, sk_recall, _ = sk_precision_recall_curve(labels, scores)
    np.testing.assert_allclose(precision, sk_precision[::-1])
    np.testing.assert_allclose(recall, sk_recall[::-1])
    assert (precision[0], recall[0], recall[-1]) == (1.0, 0.0, 1.0)


@pytest.mark.parametrize("fn", [m.auprc, m.precision_recall_curve])
@pytest.mark.parametrize(
    "labels, scores, message",
    [
        ([0, 0, 0], [1, 2, 3], "no positive"),
        ([1, 0], [1, 2, 3], "same length"),
        ([1, 2, 0], [1, 2, 3], "0/1"),
        ([[1, 0]], [1, 2], "1-D"),
    ],
)
def test_retrieval_rejects_bad_labels(fn, labels, scores, message):
    with pytest.raises(ValueError, match=message):
        fn(labels, scores)


def test_aggregate_scores():
    scores = np.array([[1.0, 3.0], [4.0, 0.0]])
    np.testing.assert_allclose(m.aggregate_scores(scores), [2.0, 2.0])
    np.testing.assert_allclose(m.aggregate_scores(scores, how="max"), [3.0, 4.0])
    with pytest.raises(ValueError, match="how must be one of"):
        m.aggregate_scores(scores, how="median")
    with pytest.raises(ValueError, match="2-D"):
        m.aggregate_scores([1.0, 2.0])


def test_bootstrap_interval_resamples_pool_and_queries(rng):
    gt = rng.standard_normal((40, 12))
    pred = gt + rng.standard_normal((40, 12))
    # One resample is that block's figure, drawn as documented: rows, then columns.
    draw = np.random.default_rng(7)
    rows, cols = draw.integers(40, size=40), draw.integers(12, size=12)
    expected = m.aggregated_spearman(gt[np.ix_(rows, cols)], pred[np.ix_(rows, cols)])
    assert m.bootstrap_interval(m.aggregated_spearman, gt, pred, n_resamples=1, seed=7) == (
        pytest.approx(expected),
        pytest.approx(expected),
    )

    low, high = m.bootstrap_interval(m.per_anchor_spearman, gt, pred, n_resamples=300)
    assert low < m.per_anchor_spearman(gt, pred) < high
    assert (low, high) == m.bootstrap_interval(m.per_anchor_spearman, gt, pred, n_resamples=300)
    small = m.bootstrap_interval(m.per_anchor_spearman, gt[:10], pred[:10], n_resamples=300)
    assert small[1] - small[0] > high - low  # fewer pool samples, wider interval
    # A perfect prediction stays perfect in every resample (duplicated rows tie in both).
    assert m.bootstrap_interval(m.pairwise_spearman, gt, gt, n_resamples=50) == (1.0, 1.0)
    with pytest.raises(ValueError, match="level"):
        m.bootstrap_interval(m.pairwise_spearman, gt, pred, level=1.0)


def test_aggregations_are_the_attribution_aggregates():
    from influcoder.metrics import AGGREGATES

    scores = np.array([[1.0, 3.0], [4.0, 0.0], [0.5, 0.5]])
    # Every attribution aggregate is accepted, "sum" included.
    assert set(m.AUPRC_AGGREGATES) < set(AGGREGATES)
    np.testing.assert_allclose(m.aggregate_scores(scores, how="sum"), [4.0, 4.0, 1.0])
    # The AUPRC aggregates leave out "sum" because it ranks the pool exactly as "mean" does.
    assert m.AUPRC_AGGREGATES == ("mean", "max")
    labels = [True, False, False]
    assert m.auprc(labels, m.aggregate_scores(scores, "sum")) == m.auprc(
        labels, m.aggregate_scores(scores, "mean")
    )
