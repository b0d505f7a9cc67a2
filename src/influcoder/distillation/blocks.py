"""The held-out split and the training blocks of distillation.

:func:`split_indices` holds out a seeded share of the pool samples and of the queries
(:class:`DistillSplit`); :class:`BlockSampler` draws each training step's (pool, query) block
from the training side, optionally seeded with each query's top pool samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from influcoder.distillation.settings import DistillArguments

MIN_SPLIT = 2  # samples each side of a split needs: a Spearman over fewer is undefined


@dataclass
class DistillSplit:
    """Row (pool) and column (query) indices of the ground truth by role, each sorted."""

    train_pool: np.ndarray
    val_pool: np.ndarray
    train_query: np.ndarray
    val_query: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {
            "train_pool": len(self.train_pool),
            "val_pool": len(self.val_pool),
            "train_query": len(self.train_query),
            "val_query": len(self.val_query),
        }


def small_data_val_fraction(val_fraction: float, n_pool: int, n_query: int) -> float:
    """``val_fraction`` widened where it would hold out fewer than :data:`MIN_SPLIT` of the
    smaller side (a dozen pool samples, four queries): the share that holds out
    :data:`MIN_SPLIT` of it. Callers apply it only to the default, never to a share the user
    chose. Below :data:`MIN_SPLIT` on each side of the split, no share helps: it is kept."""
    smaller = min(n_pool, n_query)
    if smaller < 2 * MIN_SPLIT:
        return val_fraction
    return max(val_fraction, MIN_SPLIT / smaller)


def split_indices(
    n_pool: int, n_query: int, val_fraction: float, rng: np.random.Generator
) -> DistillSplit:
    train_pool, val_pool = _split_one(n_pool, val_fraction, rng, "pool samples")
    train_query, val_query = _split_one(n_query, val_fraction, rng, "queries")
    return DistillSplit(train_pool, val_pool, train_query, val_query)


def _split_one(
    n: int, val_fraction: float, rng: np.random.Generator, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, validation)`` indices of ``n`` items; ``round(val_fraction * n)`` are
    held out."""
    n_val = round(val_fraction * n)
    if n_val < MIN_SPLIT or n - n_val < MIN_SPLIT:
        raise ValueError(
            f"too few {what} to split: val_fraction={val_fraction} of {n} holds out "
            f"{n_val} and trains on {n - n_val}, and each side needs at least "
            f"{MIN_SPLIT}; give more {what} or change val_fraction (--val-fraction)"
        )
    order = rng.permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class BlockSampler:
    """Draws the (pool, query) index blocks of training steps, from one seeded generator.

    Each step takes ``batch_query`` distinct training queries and ``batch_pool`` distinct
    training pool samples: first up to ``round(hard_fraction * batch_pool)`` hard ones (the
    queries' top ground-truth pool samples, taken rank by rank across the queries: every
    query's best, then every query's second best, ...), then random others.
    """

    def __init__(
        self, gt: np.ndarray, split: DistillSplit, args: DistillArguments, rng: np.random.Generator
    ):
        self.pool, self.query, self.rng = split.train_pool, split.train_query, rng
        self.batch_pool = min(args.batch_pool, len(self.pool))
        self.batch_query = min(args.batch_query, len(self.query))
        self.n_hard = round(args.hard_fraction * self.batch_pool)
        # top[q]: positions in self.pool of training query q's n_hard best pool samples, best first
        self.top = np.empty((len(self.query), self.n_hard), dtype=np.int64)
        if self.n_hard:
            for q, column in enumerate(self.query):
                scores = gt[self.pool, column]
                best = np.argpartition(-scores, self.n_hard - 1)[: self.n_hard]
                self.top[q] = best[np.argsort(-scores[best], kind="stable")]

    def steps_to_cover(self) -> int:
        """Steps whose blocks hold as many pairs as there are training (pool, query) pairs."""
        return math.ceil(len(self.pool) / self.batch_pool) * math.ceil(
            len(self.query) / self.batch_query
        )

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth row and column indices of one step's block."""
        queries = self.rng.choice(len(self.query), self.batch_query, replace=False)
        by_rank = self.top[queries].T.ravel()
        _, first = np.unique(by_rank, return_index=True)
        hard = by_rank[np.sort(first)][: self.n_hard]
        others = np.setdiff1d(np.arange(len(self.pool)), hard, assume_unique=True)
        pool = np.concatenate(
            [hard, self.rng.choice(others, self.batch_pool - len(hard), replace=False)]
        )
        return self.pool[pool], self.query[queries]
