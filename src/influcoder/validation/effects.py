"""What the retraining runs show: removal effects and the linear datamodeling score (LDS).

Pure numpy on the losses the runs measured (:mod:`influcoder.validation.retrain`), so every
figure can be checked against a hand computation:

* :func:`removal_set`: the pool samples a method removes, its top ``fraction`` by the
  aggregate of its scores over the target queries;
* :func:`removal_effect`: the change in held-out loss a removal caused, paired by seed
  (each removal is compared with the full pool trained with the same seed), averaged over
  seeds and held-out samples, with a bootstrap interval over the held-out samples;
* :func:`lds_subsets` and :func:`lds`: Park et al.'s linear datamodeling score as Bergson and
  AirRep compute it. For held-out query ``j`` and random pool subsets ``S_1..S_M``, a method
  predicts ``g_j(S) = sum_{i in S} score(i, j)``; the LDS of ``j`` is the Spearman correlation,
  over the subsets, of ``g_j(S_m)`` and ``-loss_j(S_m)`` (a helpful subset lowers the loss);
  the method's LDS is the mean over queries;
* :func:`paired_lds_difference`: one method's LDS minus another's on the same runs, with a
  paired bootstrap interval (the same subsets and queries drawn for both), which tells two
  methods apart where their separate intervals overlap.
"""

from __future__ import annotations

import numpy as np

from influcoder.metrics import (
    aggregate_scores,
    bootstrap_interval,
    column_spearman,
    per_anchor_spearman,
)


def removal_count(n_pool: int, fraction: float) -> int:
    """How many of ``n_pool`` samples a ``fraction`` removes: at least one, never all."""
    return min(n_pool - 1, max(1, round(n_pool * fraction)))


def removal_set(scores: np.ndarray, fraction: float, how: str = "mean") -> np.ndarray:
    """Indices of the pool samples with the top ``fraction`` of aggregated ``scores``
    (``[n_pool, n_targets]``), best first; ties broken by the lower index."""
    pooled = aggregate_scores(scores, how)
    count = removal_count(pooled.size, fraction)
    return np.argsort(-pooled, kind="stable")[:count]


def mean_interval(
    per_sample: np.ndarray, n_boot: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``per_sample``."""
    rng = np.random.default_rng(seed)
    means = per_sample[rng.integers(per_sample.size, size=(n_boot, per_sample.size))].mean(1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def removal_effect(
    full: np.ndarray, removed: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict:
    """The loss change a removal caused on one evaluation set.

    Args:
        full: ``[n_seeds, n_samples]`` losses of the full-pool runs.
        removed: ``[n_seeds, n_samples]`` losses of the runs without the removed samples,
            row ``s`` trained with the same seed as ``full[s]``.

    Returns:
        ``delta`` (mean loss change), ``low``/``high`` (its 95% bootstrap interval over the
        samples, each sample's change averaged over seeds first), ``relative`` (``delta`` over
        the full runs' mean loss), ``per_seed`` (the mean change of each seed).
    """
    full, removed = np.asarray(full, float), np.asarray(removed, float)
    if full.shape != removed.shape or full.ndim != 2 or full.size == 0:
        raise ValueError(
            f"full and removed must be [seeds, samples] of one shape, got "
            f"{full.shape} and {removed.shape}"
        )
    change = removed - full
    per_sample = change.mean(axis=0)
    low, high = mean_interval(per_sample, n_boot, seed)
    return {
        "delta": float(per_sample.mean()),
        "low": low,
        "high": high,
        "relative": float(per_sample.mean() / full.mean()),
        "per_seed": [float(v) for v in change.mean(axis=1)],
    }


def lds_subsets(n_pool: int, count: int, fraction: float, seed: int) -> list[np.ndarray]:
    """``count`` random subsets of ``round(n_pool * fraction)`` pool indices (sorted), drawn
    independently from one seeded generator."""
    size = min(n_pool, max(1, round(n_pool * fraction)))
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(n_pool, size=size, replace=False)) for _ in range(count)]


def lds(
    scores: np.ndarray,
    subsets: list[np.ndarray],
    losses: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """The linear datamodeling score of one method.

    Args:
        scores: ``[n_pool, n_queries]``, the method's scores against the held-out queries.
        subsets: the pool subsets the runs trained on.
        losses: ``[n_subsets, n_queries]``, each run's loss on each held-out query.

    Returns:
        ``lds`` (mean over queries), ``low``/``high`` (95% bootstrap interval, resampling the
        subsets and the queries: held-out queries of one kind move together from subset to
        subset, so resampling the queries alone would be overconfident) and ``per_query``. A
        query whose predictions or losses are constant over the subsets has no rank
        correlation and counts as 0 (a method with no preference predicts nothing).
    """
    scores, losses = np.asarray(scores, float), np.asarray(losses, float)
    if losses.shape != (len(subsets), scores.shape[1]):
        raise ValueError(
            f"losses must be [subsets, queries] = {(len(subsets), scores.shape[1])}, "
            f"got {losses.shape}"
        )
    predicted = np.stack([scores[subset].sum(axis=0) for subset in subsets])
    per_query = np.nan_to_num(column_spearman(-losses, predicted), nan=0.0)
    low, high = bootstrap_interval(
        per_anchor_spearman, -losses, predicted, n_resamples=n_boot, seed=seed
    )
    return {
        "lds": float(per_query.mean()),
        "low": low,
        "high": high,
        "per_query": [float(v) for v in per_query],
    }


def lds_by_kind(
    scores: np.ndarray,
    subsets: list[np.ndarray],
    losses: np.ndarray,
    kinds,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict]:
    """:func:`lds` over the queries of each kind (``kinds``: one value per query column):
    kind -> ``{lds, low, high, n}``, kinds in sorted order."""
    kinds = np.asarray([str(k) for k in kinds])
    if kinds.size != np.shape(scores)[1]:
        raise ValueError(
            f"kinds must give one value per query, got {kinds.size} for {np.shape(scores)[1]}"
        )
    out = {}
    for kind in sorted(set(kinds.tolist())):
        cols = kinds == kind
        score = lds(
            np.asarray(scores)[:, cols],
            subsets,
            np.asarray(losses)[:, cols],
            n_boot=n_boot,
            seed=seed,
        )
        out[kind] = {
            "lds": score["lds"],
            "low": score["low"],
            "high": score["high"],
            "n": int(cols.sum()),
        }
    return out


def paired_lds_difference(pair, subsets, losses, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """LDS of scores ``a`` minus LDS of scores ``b`` (``pair``, ``[n_pool, n_queries]`` each)
    on the same runs (``subsets``; ``losses``: ``[n_subsets, n_queries]``): ``difference``,
    and ``low``/``high``, a 95% paired bootstrap interval over ``n_boot`` resamples: each
    draws the subsets and the queries with replacement once, for both methods."""
    a, b = pair
    target = -np.asarray(losses, dtype=float)
    if target.shape != (len(subsets), np.shape(a)[1]) or np.shape(a) != np.shape(b):
        raise ValueError(
            f"scores {np.shape(a)} and {np.shape(b)} and losses {target.shape} do not match "
            f"{len(subsets)} subsets"
        )
    pa, pb = (np.stack([np.asarray(s)[subset].sum(axis=0) for subset in subsets]) for s in (a, b))

    def difference(rows, cols):
        t = target[np.ix_(rows, cols)]
        ra = np.nan_to_num(column_spearman(t, pa[np.ix_(rows, cols)]), nan=0.0)
        rb = np.nan_to_num(column_spearman(t, pb[np.ix_(rows, cols)]), nan=0.0)
        return float(ra.mean() - rb.mean())

    n_runs, n_queries = target.shape
    rng = np.random.default_rng(seed)
    draws = [
        difference(rng.integers(0, n_runs, n_runs), rng.integers(0, n_queries, n_queries))
        for _ in range(n_boot)
    ]
    low, high = np.quantile(draws, [0.025, 0.975])
    return {
        "difference": difference(np.arange(n_runs), np.arange(n_queries)),
        "low": float(low),
        "high": float(high),
    }
