"""Settings of the validation stage (``influcoder validate``): every default, defined once.

Importing this module is cheap (no torch): the CLI builds its options from
:class:`ValidateArguments` before it knows which command runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Text baselines a validation runs by default beside the gradient and the encoders.
DEFAULT_VALIDATE_BASELINES = ("bm25", "random")


@dataclass
class ValidateArguments:
    """How the counterfactual check and LDS retrain the adapter (``influcoder validate``)."""

    fraction: float = field(
        default=0.1,
        metadata={
            "help": "share of the pool each method removes: its top-ranked samples for the "
            "target queries"
        },
    )
    aggregate: str = field(
        default="mean",
        metadata={
            "help": "one score per pool sample over the target queries: 'mean' (the set as a "
            "whole) or 'max' (any one target)"
        },
    )
    seeds: tuple[int, ...] = field(
        default=(0, 1, 2),
        metadata={
            "help": "training seeds (adapter initialisation and data order); every removal is "
            "compared with the full pool trained with the same seed"
        },
    )
    epochs: float = field(
        default=1.0, metadata={"help": "passes over the (reduced) pool per training run"}
    )
    lr: float = field(default=5e-4, metadata={"help": "AdamW learning rate of the adapter"})
    start: str = field(
        default="fresh",
        metadata={
            "help": "the adapter each run starts from: 'fresh' (a new adapter seeded with the "
            "run's seed) or 'warm' (the pool store's own warmed-up adapter)"
        },
    )
    batch_size: int = field(default=8, metadata={"help": "samples per optimiser step"})
    batch_tokens: int = field(
        default=1024,
        metadata={
            "help": "padded token positions per forward/backward (bounds memory; the step is "
            "accumulated over such micro-batches)"
        },
    )
    lds_subsets: int = field(
        default=0,
        metadata={
            "help": "random pool subsets for the linear datamodeling score (one training run "
            "each); 0 skips LDS"
        },
    )
    lds_fraction: float = field(
        default=0.5, metadata={"help": "share of the pool in each LDS subset"}
    )
    lds_seed: int = field(
        default=0,
        metadata={"help": "seed of the LDS subsets (their training runs use the first --seeds)"},
    )
    group_removal: str | None = field(
        default=None,
        metadata={
            "help": "also train once without each group of this pool field (e.g. category), "
            "groups of at least --group-min-size samples, for `influcoder lds "
            "--group-removal`: the groups' measured effects"
        },
    )
    group_min_size: int = field(
        default=5, metadata={"help": "--group-removal: the smallest group removed"}
    )
    n_boot: int = field(
        default=1000,
        metadata={"help": "bootstrap resamples (over held-out queries) for the intervals"},
    )
    learned_fall: float = field(
        default=0.05,
        metadata={
            "help": "warn unless training on the full pool lowers the held-out loss below the "
            "untrained start by at least this share (the upper end of its 95% interval)"
        },
    )

    def __post_init__(self):
        seeds = (self.seeds,) if isinstance(self.seeds, (int, str)) else self.seeds
        self.seeds = tuple(int(s) for s in seeds)
        if not 0 < self.fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {self.fraction}")
        if self.aggregate not in ("mean", "max"):
            raise ValueError(f"aggregate must be 'mean' or 'max', got {self.aggregate!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")
        if not self.epochs > 0 or not self.lr > 0:
            raise ValueError(f"epochs and lr must be > 0, got {self.epochs}, {self.lr}")
        if self.start not in ("fresh", "warm"):
            raise ValueError(f"start must be 'fresh' or 'warm', got {self.start!r}")
        if not 0 <= self.learned_fall < 1:
            raise ValueError(f"learned_fall must be in [0, 1), got {self.learned_fall}")
        if self.batch_size < 1 or self.batch_tokens < 1:
            raise ValueError("batch_size and batch_tokens must be >= 1")
        if self.lds_subsets < 0 or self.lds_subsets == 1:
            raise ValueError(f"lds_subsets must be 0 (no LDS) or >= 2, got {self.lds_subsets}")
        if not 0 < self.lds_fraction < 1:
            raise ValueError(f"lds_fraction must be in (0, 1), got {self.lds_fraction}")
        if self.group_min_size < 1:
            raise ValueError(f"group_min_size must be >= 1, got {self.group_min_size}")
        if self.n_boot < 1:
            raise ValueError(f"n_boot must be >= 1, got {self.n_boot}")
