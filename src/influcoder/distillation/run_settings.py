"""Settings of learning from retraining runs (``influcoder distill-runs``), and its split.

:class:`RunsArguments` is recorded in the encoder's ``influcoder_runs.json``;
:func:`split_runs` holds out a seeded share of the runs and of the queries, so an encoder is
judged on runs and queries no training step saw. Importing this module loads no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from influcoder.distillation.settings import DEFAULT_MICRO_BATCH
from influcoder.io.samples import parse_where

POOLING_CHOICES = ("sum", "attention")
#: distill's default rate: a few steps an epoch on a demo-sized run store.
DEFAULT_RUNS_LR = 2e-4
#: Learning rate of the attention pooling's vector: it starts at 0 and is one vector, so it
#: moves at a rate of its own.
DEFAULT_POOLING_LR = 1e-2


@dataclass
class RunsArguments:
    """How an encoder learns from retraining runs (AirRep's objective,
    :mod:`influcoder.distillation.losses.subset_ranking`).

    Each step takes ``batch_query`` training queries and scores every training run's subset
    for them through the set pooling; ``batch_pool`` pool samples are embedded with
    gradients, the other members come from embeddings refreshed at the start of each epoch
    (and whenever a step re-embeds them), which keeps a step's cost independent of the pool's
    size.
    """

    epochs: int = field(default=3, metadata={"help": "passes over the training queries"})
    lr: float = field(default=DEFAULT_RUNS_LR, metadata={"help": "AdamW learning rate (constant)"})
    batch_query: int = field(default=16, metadata={"help": "training queries per step"})
    batch_pool: int = field(
        default=48,
        metadata={
            "help": "pool samples embedded with gradients per step; the other members of "
            "each subset use embeddings computed without gradients"
        },
    )
    pooling: Literal["sum", "attention"] = field(
        default="sum",
        metadata={
            "help": "how a subset is scored: sum (the linear datamodel LDS scores) or "
            "attention (a learned attention over the members, scaled by set size)"
        },
    )
    pooling_lr: float = field(
        default=DEFAULT_POOLING_LR, metadata={"help": "learning rate of the attention pooling"}
    )
    temperature: float = field(
        default=1.0, metadata={"help": "divides the subset score differences in the loss"}
    )
    max_weight: float = field(
        default=10.0,
        metadata={"help": "largest weight of a pair (its gap in standardised loss, clipped)"},
    )
    train_runs: int = field(
        default=0,
        metadata={"help": "train on N of the training runs (0: all of them)"},
    )
    heldout_runs: float = field(
        default=0.25,
        metadata={"help": "share of the runs held out for judging (seeded); 0 trains on all"},
    )
    heldout_queries: float = field(
        default=0.25,
        metadata={"help": "share of the queries held out for judging (seeded); 0 trains on all"},
    )
    heldout_where: str | None = field(
        default=None,
        metadata={
            "help": "FIELD=VALUE: hold out the queries whose field has this value (e.g. "
            "block=report: the queries a gradient-distilled encoder never saw) instead of a "
            "seeded share of them"
        },
    )
    max_seq_length: int = field(default=128, metadata={"help": "tokens per text at most"})
    micro_batch: int = field(
        default=DEFAULT_MICRO_BATCH, metadata={"help": "texts per length-sorted forward pass"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the split, the batches and torch"})

    def __post_init__(self) -> None:
        if self.pooling not in POOLING_CHOICES:
            raise ValueError(f"pooling must be one of {POOLING_CHOICES}, got {self.pooling!r}")
        if self.epochs < 0 or self.train_runs < 0:
            raise ValueError(
                f"epochs and train_runs must be >= 0, got {self.epochs} and {self.train_runs}"
            )
        if min(self.batch_query, self.batch_pool, self.max_seq_length) < 1:
            raise ValueError("batch_query, batch_pool and max_seq_length must be >= 1")
        if min(self.lr, self.pooling_lr, self.temperature, self.max_weight) <= 0:
            raise ValueError("lr, pooling_lr, temperature and max_weight must be > 0")
        try:
            parse_where(self.heldout_where)
        except ValueError as e:
            raise ValueError(f"heldout_where: {e}") from None
        for name in ("heldout_runs", "heldout_queries"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunsSplit:
    """Run (row) and query (column) indices by role, each sorted; ``train_runs`` are the
    runs training uses (``train_runs`` of the training side when a number is given)."""

    train_runs: np.ndarray
    heldout_runs: np.ndarray
    train_queries: np.ndarray
    heldout_queries: np.ndarray

    def to_dict(self) -> dict:
        return {k: [int(i) for i in v] for k, v in asdict(self).items()}


def heldout_mask(metas: Sequence[Mapping], where: str | None) -> np.ndarray | None:
    """The queries (by their ``meta``) that ``where`` (``FIELD=VALUE``) holds out; None
    without ``where``. No query matching, or every one: ``ValueError``."""
    if where is None:
        return None
    name, value = parse_where(where)
    mask = np.array([str(m.get(name)) == value for m in metas], dtype=bool)
    if not mask.any() or mask.all():
        raise ValueError(
            f"heldout_where {where!r}: {int(mask.sum())} of {len(mask)} queries match; "
            "it must hold out some queries and leave some to train on"
        )
    return mask


def split_runs(
    n_runs: int, n_queries: int, args: RunsArguments, heldout: np.ndarray | None = None
) -> RunsSplit:
    """Hold out ``round(share * n)`` of the runs and of the queries (or the queries of the
    ``heldout`` mask, :func:`heldout_mask`), drawn from a generator
    seeded with ``args.seed`` (the same split whatever ``args.train_runs``: a curve over the number
    of training runs is judged on one held-out set). Training keeps at least 2 runs and 1
    query; a held-out side, when there is one, at least 2 runs and 1 query."""
    rng = np.random.default_rng(args.seed)
    run_order, query_order = rng.permutation(n_runs), rng.permutation(n_queries)
    n_hr, n_hq = round(args.heldout_runs * n_runs), round(args.heldout_queries * n_queries)
    if heldout is not None:  # the mask's queries first, each side in the seeded order
        heldout = np.asarray(heldout, dtype=bool)
        query_order = np.concatenate(
            [query_order[heldout[query_order]], query_order[~heldout[query_order]]]
        )
        n_hq = int(heldout.sum())
    if n_runs - n_hr < 2 or n_queries - n_hq < 1 or n_hr == 1:
        raise ValueError(
            f"too few runs or queries to split: {n_runs} runs ({n_hr} held out) and "
            f"{n_queries} queries ({n_hq} held out); training needs 2 runs and 1 query, a "
            "held-out side 2 runs"
        )
    train = run_order[n_hr:]
    if args.train_runs:
        if args.train_runs > len(train):
            raise ValueError(
                f"train_runs={args.train_runs} asked for, {len(train)} training runs there"
            )
        train = train[: args.train_runs]
    if len(train) < 2:
        raise ValueError("training needs at least 2 runs")
    return RunsSplit(
        np.sort(train),
        np.sort(run_order[:n_hr]),
        np.sort(query_order[n_hq:]),
        np.sort(query_order[:n_hq]),
    )
