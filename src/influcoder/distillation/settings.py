"""Settings of the distillation stage (``influcoder distill``), recorded in the output card.

The losses' defaults and checks live here too, so the CLI reads every default without
importing torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from influcoder.encoders.settings import SIMILARITIES

DEFAULT_PEARSON_WEIGHT = 0.3
DEFAULT_KL_WEIGHT = 1.0
DEFAULT_AGGREGATE_WEIGHT = 0.0
DEFAULT_TEMPERATURE = 0.05
#: ``--head``: the kinds of head each choice lets the cross-validation pick from
#: (influcoder.distillation.head_fit.fit_head: ``linear``, ``kernel``); ``none``: no head.
HEAD_CHOICES: dict[str, tuple[str, ...]] = {
    "auto": ("linear", "kernel"),
    "linear": ("linear",),
    "kernel": ("kernel",),
    "none": (),
}
HEADS = tuple(HEAD_CHOICES)
#: ``--head`` values renamed (refused with the new name, on the command line and here).
FORMER_HEADS = {"ridge": "linear", "rbf": "kernel"}
VALIDATE_QUERIES = ("held-out", "all")
#: ``--views``: the texts of a sample the head reads (influcoder.encoders.views), and the
#: candidates each choice fits (``auto``: both, the better by the head's cross-validation).
VIEW_CHOICES: dict[str, tuple[tuple[str, ...], ...]] = {
    "auto": (("text",), ("text", "response")),
    "text": (("text",),),
    "text+response": (("text", "response"),),
}
DEFAULT_VIEWS = "auto"
# A head per run, its kind chosen on the head's cross-validation folds (never a test block): on
# the 500 x 1,000 stores' folds the kernel head beat the linear one (docs/DISTILLATION.md).
DEFAULT_HEAD = "auto"
DEFAULT_HEAD_COMPONENTS = 128
#: As influcoder.distillation.landmarks.DEFAULT_LANDMARKS (kept here so the CLI needs no numpy).
DEFAULT_HEAD_LANDMARKS = 2000
#: How the head's outputs are compared: ``auto`` scores cosine and dot product on the head's
#: cross-validation folds and keeps the better (influcoder.distillation.head_fit.fit_head). On the
#: 500 x 1,000 stores' folds dot kept per-anchor Spearman (within 0.003) and added 0.07-0.13
#: aggregated; on a planted geometry cosine was far better: neither is right everywhere.
DEFAULT_HEAD_SIMILARITY = "auto"
DEFAULT_REGRESSION_WEIGHT = 0.0
#: Texts per training forward pass (influcoder.distillation.forward): on CPU larger batches of
#: equal length buy little.
DEFAULT_MICRO_BATCH = 32


def check_weights(pearson_weight: float, kl_weight: float, aggregate_weight: float = 0.0) -> None:
    """Every weight >= 0 and not all 0, or ``ValueError``."""
    weights = (pearson_weight, kl_weight, aggregate_weight)
    if min(weights) < 0 or sum(weights) == 0:
        raise ValueError(
            f"pearson_weight, kl_weight and aggregate_weight must be >= 0 and not "
            f"all 0, got {pearson_weight}, {kl_weight} and {aggregate_weight}"
        )


def check_temperatures(*temperatures: float) -> None:
    """Every temperature > 0, or ``ValueError``."""
    if any(t <= 0 for t in temperatures):
        raise ValueError(f"temperatures must be > 0, got {temperatures}")


@dataclass
class DistillArguments:
    """How a sentence encoder is trained to reproduce a ground-truth influence matrix.

    One training step takes a block of the ground truth: ``batch_query`` training queries by
    ``batch_pool`` training pool samples, and minimises
    :class:`~influcoder.distillation.losses.InfluenceDistillLoss` on it with AdamW. After
    training, a head fitted in closed form is appended (``head``: ``linear``, ``kernel``
    (RBF kernel ridge), or ``auto``, the better by cross-validation;
    :mod:`influcoder.distillation.head_fit`);
    ``epochs=0`` skips training, leaving the head alone.
    """

    epochs: int = field(
        default=3,
        metadata={
            "help": "passes over the training blocks; 0 trains nothing (with a --head: the "
            "encoder as given plus the fitted head, in seconds)"
        },
    )
    lr: float = field(
        default=2e-4,
        metadata={
            "help": "AdamW learning rate (constant). 2e-4 with --batch-query 64 was best on the "
            "demo's validation splits; the Influcoder paper's code used 5e-5 with 8 queries "
            "per step, which takes 5x the steps (docs/DISTILLATION.md)"
        },
    )
    batch_pool: int = field(
        default=32,
        metadata={
            "help": "pool samples per step (the softmax of each query runs over these); capped at "
            "the number of training pool samples"
        },
    )
    batch_query: int = field(
        default=64,
        metadata={
            "help": "queries per step; capped at the number of training queries. Every step "
            "encodes its pool samples and queries, so more queries per step cover the "
            "same pairs with fewer encodings: with 36 training queries 64 takes 7 steps "
            "of 68 texts an epoch, 8 takes 35 steps of 40 texts (2.9x the work)"
        },
    )
    hard_fraction: float = field(
        default=0.0,
        metadata={
            "help": "share of each step's pool samples taken from the step's queries' top "
            "ground-truth pool samples ('hard examples'), the rest drawn at random. Hard "
            "examples help on large pools, where a random batch rarely holds a query's "
            "most influential samples, and hurt on small ones, where they crowd out the "
            "rest of the ranking; hence 0 by default"
        },
    )
    temperature: float = field(
        default=DEFAULT_TEMPERATURE,
        metadata={"help": "softmax temperature of the predicted cosines in the KL term"},
    )
    target_temperature: float | None = field(
        default=None,
        metadata={"help": "softmax temperature of the ground-truth scores; None uses temperature"},
    )
    pearson_weight: float = field(
        default=DEFAULT_PEARSON_WEIGHT,
        metadata={"help": "weight of the Pearson term (0.2 to 0.5 were best in the paper's code)"},
    )
    kl_weight: float = field(
        default=DEFAULT_KL_WEIGHT, metadata={"help": "weight of the softmax KL term"}
    )
    aggregate_weight: float = field(
        default=DEFAULT_AGGREGATE_WEIGHT,
        metadata={
            "help": "weight of the aggregated term: 1 - Pearson correlation of each pool sample's "
            "mean score over the step's queries, the pool-wide ranking that aggregated "
            "Spearman scores (0: off)"
        },
    )
    val_fraction: float = field(
        default=0.1,
        metadata={
            "help": "share of the pool samples AND of the queries held out for validation, which "
            "scores held-out queries against held-out pool samples"
        },
    )
    holdout_fraction: float | None = field(
        default=None,
        metadata={
            "help": "share of the pool samples AND of the queries held out of distillation "
            "altogether (training, validation and the head), on which the saved encoder is "
            "scored at the end: the held-out fidelity estimate in its card, as honest as a "
            "separate test. None: 0.1 where that holds out at least 10 pool samples and 4 "
            "queries, else no estimate; 0: distil on everything, no estimate. Stores only "
            "(influcoder distill, fit)"
        },
    )
    validate_queries: Literal["held-out", "all"] = field(
        default="held-out",
        metadata={
            "help": "which queries validation scores the held-out pool samples against: "
            "'held-out' (queries never trained on) or 'all' (every query: the held-out "
            "pool samples are still unseen, and the block is 1/val_fraction times "
            "larger, so choosing the epoch is less of a coin toss on small data)"
        },
    )
    patience: int = field(
        default=2,
        metadata={
            "help": "stop after this many epochs without a better validation per-anchor Spearman"
        },
    )
    seed: int = field(
        default=0,
        metadata={"help": "seed of the split, the batches and torch's generators (dropout)"},
    )
    max_seq_length: int = field(
        default=256,
        metadata={
            "help": "tokens per text, capped at the encoder's position embeddings; longer texts are "
            "truncated (saved with the encoder)"
        },
    )
    steps_per_epoch: int | None = field(
        default=None,
        metadata={
            "help": "optimizer steps per epoch; None takes enough steps for the blocks to cover "
            "every (training pool sample, training query) pair about once: "
            "ceil(pool / batch_pool) * ceil(queries / batch_query)"
        },
    )

    freeze_layers: int = field(
        default=0,
        metadata={
            "help": "keep the embeddings and the first N transformer layers fixed: the backward "
            "pass then stops at layer N, so each step is cheaper (0: train everything)"
        },
    )
    micro_batch: int = field(
        default=DEFAULT_MICRO_BATCH,
        metadata={
            "help": "texts per forward pass within a training step: the step's texts are sorted "
            "by length and cut into micro-batches of at most this many with little "
            "padding, which made a demo step ~3x faster on CPU than one padded batch and "
            "bounds activation memory; the embeddings are the same. 0: the whole block "
            "as one padded batch (the reference)"
        },
    )

    head: Literal["auto", "linear", "kernel", "none"] = field(
        default=DEFAULT_HEAD,
        metadata={
            "renamed": FORMER_HEADS,
            "help": "after training, a head regressing the embeddings onto the gradients' "
            "principal coordinates, fitted in closed form: 'linear' (ridge regression: "
            "sentence-transformers Dense [+ Normalize], the encoder stays one plain "
            "directory), 'kernel' (RBF kernel ridge over the training samples: a "
            "multi-view encoder directory), or 'auto': both on the head's "
            "cross-validation folds, the better per-anchor Spearman kept (ties: linear); "
            "strengths chosen the same way. 'none': the encoder alone",
        },
    )
    head_similarity: Literal["auto", "dot", "cosine"] = field(
        default=DEFAULT_HEAD_SIMILARITY,
        metadata={
            "help": "how the head's outputs are compared: 'cosine' (unit vectors), 'dot' (their "
            "lengths kept: ridge shrinks what it is unsure of), or 'auto': both on the "
            "head's cross-validation folds, the higher mean of per-anchor and "
            "aggregated Spearman kept (ties: cosine). Recorded in the encoder; encode, "
            "index and attribute follow it"
        },
    )
    head_components: int = field(
        default=DEFAULT_HEAD_COMPONENTS,
        metadata={
            "help": "principal directions of the gradients the head regresses (its output "
            "dimension; capped at the number of samples)"
        },
    )
    head_landmarks: int = field(
        default=DEFAULT_HEAD_LANDMARKS,
        metadata={
            "help": "above 5,000 ground-truth samples (pool + queries) the kernel head is fitted "
            "on this many seeded landmarks (Nystroem) instead of the exact kernel over every "
            "sample, and keeps them as its anchors; 0: no kernel head above that size",
        },
    )
    views: Literal["auto", "text", "text+response"] = field(
        default=DEFAULT_VIEWS,
        metadata={
            "help": "what the head reads (with --head none: the text only): 'text' (prompt "
            "and response, one pass: the encoder stays one sentence-transformers directory), "
            "'text+response' (a second pass over the response alone, concatenated, in "
            "training too: a multi-view encoder directory, which encode, index, attribute "
            "and serve read), or 'auto': train on "
            "the text, fit the head on both, keep the better by its cross-validated "
            "per-anchor Spearman (ties: 'text')"
        },
    )
    regression_weight: float = field(
        default=DEFAULT_REGRESSION_WEIGHT,
        metadata={
            "help": "joint training: > 0 appends a trainable linear head (started from the "
            "closed-form ridge fit on the training samples) for the epochs, puts the ranking "
            "terms on its outputs and adds this weight times a cosine-regression term "
            "pulling each training sample's output onto its gradient's principal "
            "coordinates; validation then scores encoder + head. The closed-form head is "
            "refitted after training either way. Needs a --head; 0: off"
        },
    )

    def __post_init__(self):
        for name in ("batch_query", "patience", "max_seq_length", "head_components"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.head in FORMER_HEADS:
            raise ValueError(f"head {self.head!r} is now called {FORMER_HEADS[self.head]!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.epochs < 0 or (self.epochs == 0 and self.head == "none"):
            raise ValueError(
                f"epochs must be >= 1, or 0 with a head (nothing to do otherwise), "
                f"got {self.epochs} with head={self.head!r}"
            )
        if self.batch_pool < 2:
            raise ValueError(
                f"batch_pool must be >= 2 (a softmax over one pool sample is "
                f"constant), got {self.batch_pool}"
            )
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 or None, got {self.steps_per_epoch}")
        if self.head_similarity not in ("auto", *SIMILARITIES):
            raise ValueError(
                f"head_similarity must be 'auto' or one of {SIMILARITIES}, got "
                f"{self.head_similarity!r}"
            )
        if self.views not in VIEW_CHOICES:
            raise ValueError(f"views must be one of {tuple(VIEW_CHOICES)}, got {self.views!r}")
        if self.views == "text+response" and self.regression_weight > 0:
            raise ValueError(
                "views='text+response' trains through both views; joint training "
                "(regression_weight > 0) takes one view: use views 'text' or 'auto'"
            )
        if self.validate_queries not in VALIDATE_QUERIES:
            raise ValueError(
                f"validate_queries must be one of {VALIDATE_QUERIES}, got {self.validate_queries!r}"
            )
        if self.micro_batch < 0:
            raise ValueError(f"micro_batch must be >= 0, got {self.micro_batch}")
        if self.head_landmarks < 0:
            raise ValueError(f"head_landmarks must be >= 0, got {self.head_landmarks}")
        if self.freeze_layers < 0:
            raise ValueError(f"freeze_layers must be >= 0, got {self.freeze_layers}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.hard_fraction <= 1:
            raise ValueError(f"hard_fraction must be in [0, 1], got {self.hard_fraction}")
        if self.holdout_fraction is not None and not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        check_temperatures(
            self.temperature,
            self.temperature if self.target_temperature is None else self.target_temperature,
        )
        check_weights(self.pearson_weight, self.kl_weight, self.aggregate_weight)
        if self.regression_weight < 0:
            raise ValueError(f"regression_weight must be >= 0, got {self.regression_weight}")
        if self.regression_weight > 0 and self.head == "none":
            raise ValueError(
                "regression_weight > 0 trains through a head: it needs a head, not head='none'"
            )

    def to_dict(self) -> dict:
        return asdict(self)
