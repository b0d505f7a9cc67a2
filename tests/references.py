"""Slow, obviously correct references that the fast paths are tested against (never used by
the library itself).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from influcoder.groundtruth.gradients import _blocks
from influcoder.groundtruth.lora import gradient_modules
from influcoder.groundtruth.loss import _check_batch, _device, _FrozenExcept, _normalise
from influcoder.groundtruth.settings import DEFAULT_SKETCH_DIM, DEFAULT_SKETCH_SEED
from influcoder.groundtruth.sketch import CountSketch, countsketch_matrix
from influcoder.groundtruth.tokenize import TokenizedSample


def reference_gradients(model: nn.Module, batch: Sequence[TokenizedSample], *, target: str = "lora",
                        sketch_dim: int = DEFAULT_SKETCH_DIM,
                        sketch_seed: int = DEFAULT_SKETCH_SEED) -> np.ndarray:
    """The slow, obviously-correct version of :class:`GradientComputer` (tests only).

    One sample at a time: ``model(input_ids, labels=labels).loss`` (Hugging Face's mean
    next-token loss over the non-ignored labels), ``loss.backward()``, the ``.weight.grad`` of each
    of :func:`gradient_modules` flattened and concatenated, multiplied by the dense
    :func:`~influcoder.groundtruth.sketch.countsketch_matrix` (unless ``sketch_dim`` is 0), L2-normalised.
    The matrix is applied one weight block at a time, which is the same product: memory is that of
    the largest block's ``[numel, sketch_dim]`` matrix (400 MB for SmolLM2-135M's largest LoRA
    block at 8192; a full-model sketch of a real model is out of the reference's reach).
    The model's mode, flags and the hooked weights' ``.grad`` are restored afterwards.
    """
    if sketch_dim < 0:
        raise ValueError(f"sketch_dim must be >= 0 (0: no projection), got {sketch_dim}")
    _check_batch(batch)
    modules = gradient_modules(model, target)
    weights = [module.weight for _, module in modules]
    saved_grads = [w.grad for w in weights]
    device = _device(model)
    rows = []
    try:
        with torch.enable_grad(), _FrozenExcept(model, weights, train=False):
            for sample in batch:
                for w in weights:
                    w.grad = None
                input_ids = torch.tensor([sample.input_ids], device=device)
                labels = torch.tensor([sample.labels], device=device)
                model(input_ids=input_ids, labels=labels, use_cache=False).loss.backward()
                rows.append(torch.cat([
                    (w.grad if w.grad is not None else torch.zeros_like(w)).reshape(-1).float()
                    for w in weights]))
    finally:
        for w, grad in zip(weights, saved_grads):
            w.grad = grad
    vectors = torch.stack(rows)
    if sketch_dim:
        # Block by block: concat(x) @ S == sum of x_block @ S_block (S's rows are per coordinate),
        # so peak memory is the largest block's dense matrix, not D * dim floats.
        sketch = CountSketch(sketch_dim, sketch_seed)
        projected = torch.zeros(len(rows), sketch_dim, device=device)
        offset = 0
        for name, n in _blocks(modules):
            matrix = countsketch_matrix(sketch, [(name, n)]).to(device)
            projected += vectors[:, offset:offset + n] @ matrix
            offset += n
        vectors = projected
    return _normalise(vectors)
