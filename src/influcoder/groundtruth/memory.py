"""The memory side of the decoder stage: batches by a token budget that shrink on out-of-memory,
and gradient checkpointing.

**Token budget.** A forward/backward pass of a decoder holds activations in proportion to the
positions of its padded batch (samples x the longest sample), so :class:`TokenBudget` cuts
batches by positions (:func:`~influcoder.engines.batching.length_batches` with ``max_tokens``,
sorted by length so that padding stays small), with a sample count only as a cap. Memory is then
the same whatever the pool's size or its longest samples.

**Out of memory.** When a batch raises ``torch.cuda.OutOfMemoryError`` (or a ``RuntimeError``
saying "out of memory", as other accelerators' back ends do), :meth:`TokenBudget.run` halves the
budget to half that batch's positions, cuts the batch again with it and goes on; every later
batch is cut with the smaller budget too. Every row is computed exactly once and returned with
its indices, so callers place it where it belongs: nothing is lost or duplicated. A single
sample that does not fit raises :class:`~influcoder.errors.InflucoderError`. The operating
system kills a process that exhausts the CPU's memory before Python sees anything, so on the CPU
only the budget protects (``--batch-tokens``).

A row computed in a smaller batch equals the one from the larger batch to float rounding, not
bit for bit: the padded shape changes how the matrix products are blocked.

**Gradient checkpointing** (:func:`checkpointing`): Hugging Face's, reentrant, on the
decoder layers only, so the activations inside a layer are recomputed in the backward pass
instead of being kept. The model stays in eval mode (no dropout): only the decoder layers' own
``training`` flag, which gates Hugging Face's checkpointing, is set for the duration.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from influcoder.engines.batching import length_batches
from influcoder.errors import InflucoderError

logger = logging.getLogger(__name__)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an accelerator's out-of-memory error (CUDA's, or a RuntimeError
    that says so)."""
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error)
    )


def _release_cached_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class TokenBudget:
    """Cuts items into batches of at most ``max_tokens`` padded positions and ``max_batch``
    items, and halves the budget whenever a batch runs out of memory.

    One object lives as long as a worker: a budget halved on one shard stays halved for the
    next, so a too-large setting costs one failed batch, not one per shard.

    Example::

        >>> budget = TokenBudget(max_batch=8, max_tokens=512)
        >>> [(rows, out) for rows, out in budget.run([100, 300, 200], lambda rows: len(rows))]
        [([0, 2], 2), ([1], 1)]
    """

    def __init__(self, max_batch: int, max_tokens: int):
        if max_batch < 1 or max_tokens < 1:
            raise ValueError(
                f"max_batch and max_tokens must be >= 1, got {max_batch}, {max_tokens}"
            )
        self.max_batch, self.max_tokens = max_batch, max_tokens

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """The batches (indices into ``lengths``) under the current budget."""
        return length_batches(lengths, self.max_batch, max_tokens=self.max_tokens)

    def run(
        self, lengths: Sequence[int], compute: Callable[[list[int]], object]
    ) -> Iterator[tuple[list[int], object]]:
        """``(rows, compute(rows))`` for batches that together cover every index once.

        Raises:
            InflucoderError: one item alone runs out of memory.
        """
        pending = deque(self.batches(lengths))
        while pending:
            rows = pending.popleft()
            positions = len(rows) * max(lengths[i] for i in rows)
            if positions > self.max_tokens and len(rows) > 1:  # cut before a halving
                pending.extendleft(reversed(self._recut(rows, lengths)))
                continue
            try:
                result = compute(rows)
            except Exception as error:  # only out-of-memory is handled; the rest re-raised
                if not is_out_of_memory(error):
                    raise
                _release_cached_memory()
                if len(rows) == 1:
                    raise InflucoderError(
                        f"out of memory on one sample of {lengths[rows[0]]} tokens alone; "
                        "lower --max-length, try --gradient-checkpointing, or use a device "
                        "with more memory"
                    ) from error
                self.max_tokens = max(1, positions // 2)
                logger.warning(
                    "out of memory on a batch of %d samples (%d positions): "
                    "going on with --batch-tokens %d",
                    len(rows),
                    positions,
                    self.max_tokens,
                )
                pending.extendleft(reversed(self._recut(rows, lengths)))
                continue
            yield rows, result

    def _recut(self, rows: list[int], lengths: Sequence[int]) -> list[list[int]]:
        parts = self.batches([lengths[i] for i in rows])
        if len(parts) == 1:  # e.g. a budget below the shortest item
            half = len(rows) // 2
            return [rows[:half], rows[half:]]
        return [[rows[j] for j in part] for part in parts]


@contextmanager
def checkpointing(model, enabled: bool = True):
    """Hugging Face gradient checkpointing of ``model``'s decoder layers for the duration.

    Raises:
        ValueError: the model does not support gradient checkpointing.
    """
    if not enabled:
        yield
        return
    from transformers.modeling_layers import GradientCheckpointingLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(base).__name__} does not support gradient checkpointing")
    layers = [m for m in base.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise ValueError(f"{type(base).__name__} has no checkpointable decoder layers")
    flags = [layer.training for layer in layers]
    # transformers >= 5.x names it activation checkpointing; older releases gradient
    enable = getattr(base, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": True})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    try:
        for layer in layers:
            layer.training = True
        yield
    finally:
        for layer, flag in zip(layers, flags):
            layer.training = flag
        getattr(base, "activation_checkpointing_disable", base.gradient_checkpointing_disable)()
