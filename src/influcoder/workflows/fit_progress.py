"""The progress display of ``fit``: one line over the stages (which stage, how many are done,
time so far, overall ETA) above the running stage's own bar.

The overall ETA comes from a cost model in *gradient-sample equivalents*: a collected sample
costs 1, a text trained on in distillation :data:`DISTILL_TEXT_COST`, a text encoded
:data:`ENCODE_COST`. The seconds per unit are measured on the stages this run finishes, so
the ETA appears after the first stage and sharpens after each one.
"""

from __future__ import annotations

import math

#: a text's cost in distillation (forward and backward through the encoder) over a collected
#: sample's: ~6 s per step of 64 texts for MiniLM against ~1.4 samples/s of SmolLM2 ground
#: truth on the same 2-core CPU (docs/DISTILLATION.md, learning curve)
DISTILL_TEXT_COST = 0.13
#: a text encoded (MiniLM, inference) over a collected sample: 0.30 s against 17.2 s for the
#: same 18 queries (README results)
ENCODE_COST = 0.02


def distill_steps(args, n_pool: int, n_queries: int) -> int:
    """Steps per epoch of distillation with ``args`` (its block sampler covers every training
    pair once: :meth:`~influcoder.distillation.blocks.BlockSampler.steps_to_cover`)."""
    if args.steps_per_epoch:
        return args.steps_per_epoch
    pool = n_pool - round(args.val_fraction * n_pool)
    queries = n_queries - round(args.val_fraction * n_queries)
    return math.ceil(pool / min(args.batch_pool, pool)) * math.ceil(
        queries / min(args.batch_query, queries)
    )


def collect_units(args, n: int, warmup: bool) -> float:
    """Collecting ``n`` samples with ``args``, after the adapter's warm-up if ``warmup``."""
    seeded = args.adapter is None and args.adapter_init == "warmup"
    return n + (args.warmup_steps * args.warmup_batch_size if warmup and seeded else 0)


def distill_units(args, n_pool: int, n_queries: int) -> float:
    """Distilling from ``n_pool`` x ``n_queries`` with ``args``, the head's encoding included."""
    texts = (
        args.epochs
        * distill_steps(args, n_pool, n_queries)
        * (min(args.batch_pool, n_pool) + min(args.batch_query, n_queries))
    )
    return texts * DISTILL_TEXT_COST + 2 * (n_pool + n_queries) * ENCODE_COST


def encode_units(n: int) -> float:
    return n * ENCODE_COST


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class FitProgress:
    """The line over the stages. ``stages``: ``(name, units, already done)`` in order."""

    def __init__(self, stages: list[tuple[str, float, bool]], enabled: bool = True):
        from tqdm.auto import tqdm

        self.units = {name: units for name, units, _ in stages}
        self.left = {name for name, _, done in stages if not done}
        self.seconds = self.measured = 0.0
        self.bar = tqdm(
            total=len(stages),
            initial=len(stages) - len(self.left),
            desc="fit",
            disable=not enabled,
            dynamic_ncols=True,
            bar_format="fit {n_fmt}/{total_fmt} {desc} [{elapsed}{postfix}]",
        )

    def eta(self) -> str:
        if not self.measured:
            return "overall ETA: measuring the first stage"
        rate = self.seconds / self.measured
        return f"overall ETA ~{_duration(rate * sum(self.units[s] for s in self.left))}"

    def start(self, stage: str, title: str) -> None:
        self.bar.set_description_str(title, refresh=False)
        self.bar.set_postfix_str(self.eta())

    def finish(self, stage: str, seconds: float) -> None:
        self.left.discard(stage)
        self.seconds += seconds
        self.measured += self.units[stage]
        self.bar.set_postfix_str(self.eta() if self.left else "done", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
