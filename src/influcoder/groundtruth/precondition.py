"""Adam preconditioning of per-sample gradients (LESS, TrackStar): second moments, saved and read.

With ``precondition="adam"`` each per-sample LoRA gradient is divided elementwise by
``sqrt(v) + eps`` before it is sketched, ``v`` being the bias-corrected second moments of the
optimizer that trained the adapter: coordinates the optimizer moves little (large ``v``)
count less, as they do in an Adam step. Where ``v`` comes from:

* ``warmup``: the warm-up's own AdamW (:func:`~influcoder.groundtruth.lora.warmup` fills them
  in): the same optimizer whose steps made the adapter;
* ``pool-sample``: no warm-up ran (a user's adapter, a fresh one), so no optimizer state
  exists. ``v`` is then the mean of the squared mini-batch gradients (each the mean over
  ``warmup_batch_size`` samples, as an Adam step sees them) over at most
  :data:`MOMENT_BATCHES` batches of a seeded permutation of the data being collected: an
  estimate of what Adam's ``v`` tracks, from the data at hand.

The moments are saved beside the store's adapter (``adapter/preconditioner.safetensors``,
keyed by the gradient blocks' names) and their digest goes into the store's setup, so every
store collected ``--like`` it divides by the very same ``v``, and stores with other moments are
refused when compared. :func:`preconditioning` reads a store's saved preconditioner, these
moments or K-FAC's inverse roots (:mod:`influcoder.groundtruth.kfac`), into the gradient
computer.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from influcoder.groundtruth.loss import FrozenExcept, model_device, pad_batch, response_losses
from influcoder.groundtruth.tokenize import TokenizedSample

#: Adam's epsilon, added to ``sqrt(v)`` (AdamW's default, which the warm-up uses).
ADAM_EPS = 1e-8
#: Most mini-batches whose squared gradients estimate ``v`` when no warm-up ran.
MOMENT_BATCHES = 24
_PAD_ID = 0


def adam_moments(
    optimizer: torch.optim.Optimizer, named: Sequence[tuple[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Bias-corrected second moments ``v_hat = v / (1 - beta2^t)`` of an Adam(W) optimizer's
    parameters, by name (float32, CPU). A parameter it never stepped has none: ``ValueError``."""
    beta2 = optimizer.param_groups[0]["betas"][1]
    out = {}
    for name, p in named:
        state = optimizer.state.get(p, {})
        if "exp_avg_sq" not in state:
            raise ValueError(f"the optimizer holds no second moments for '{name}'")
        step = float(state["step"])
        out[name] = (state["exp_avg_sq"] / (1 - beta2**step)).detach().float().cpu().clone()
    return out


def squared_gradient_moments(
    model,
    batches: Sequence[Sequence[TokenizedSample]],
    named: Sequence[tuple[str, torch.Tensor]],
    *,
    max_tokens: int | None = None,
    bf16: bool = False,
    gradient_checkpointing: bool = False,
) -> dict[str, torch.Tensor]:
    """Mean over ``batches`` of the squared gradient of each batch's mean response loss, for
    each of ``named`` parameters (float32, CPU): the ``pool-sample`` estimate of Adam's ``v``.
    A batch's gradient is accumulated over micro-batches of at most ``max_tokens`` padded
    positions, as the warm-up's are. ``model``'s flags, mode and ``.grad`` are left as they
    were."""
    from influcoder.groundtruth.memory import TokenBudget, checkpointing

    if not batches:
        raise ValueError("second moments need at least one batch")
    params = [p for _, p in named]
    saved = [p.grad for p in params]
    device = model_device(model)
    longest = max(len(s.input_ids) * len(batch) for batch in batches for s in batch)
    budget = TokenBudget(max(len(batch) for batch in batches), max_tokens or longest)
    sums = [torch.zeros_like(p, dtype=torch.float32) for p in params]

    def micro_batch(batch, rows) -> None:
        input_ids, attention_mask, labels = pad_batch([batch[r] for r in rows], _PAD_ID, device)
        losses = response_losses(model, attention_mask, labels, input_ids=input_ids, bf16=bf16)
        (losses.sum() / len(batch)).backward()

    try:
        with (
            torch.enable_grad(),
            FrozenExcept(model, params, train=False),
            checkpointing(model, gradient_checkpointing),
        ):
            for batch in batches:
                for p in params:
                    p.grad = None
                for _ in budget.run(
                    [len(s.input_ids) for s in batch],
                    lambda rows, batch=batch: micro_batch(batch, rows),
                ):
                    pass
                for total, p in zip(sums, params):
                    if p.grad is not None:
                        total += p.grad.float() ** 2
    finally:
        for p, grad in zip(params, saved):
            p.grad = grad
    return {name: (total / len(batches)).cpu() for (name, _), total in zip(named, sums)}


def moment_batches(
    tokenized: Sequence[TokenizedSample], batch_size: int, seed: int
) -> list[list[TokenizedSample]]:
    """The ``pool-sample`` batches: a permutation seeded with ``seed``, cut into batches of
    ``batch_size``, at most :data:`MOMENT_BATCHES` of them."""
    order = np.random.default_rng(seed).permutation(len(tokenized))
    cuts = range(0, len(order), batch_size)
    return [[tokenized[i] for i in order[j : j + batch_size]] for j in cuts][:MOMENT_BATCHES]


def moments_digest(moments: Mapping[str, torch.Tensor | str]) -> str:
    """SHA-256 of the moments (names and float32 bytes, sorted by name; a string entry, the
    file's metadata, by its UTF-8 bytes)."""
    h = hashlib.sha256()
    for name in sorted(moments):
        h.update(name.encode() + b"\0")
        value = moments[name]
        if isinstance(value, str):
            h.update(b"str\0" + value.encode())
        else:
            h.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return "sha256:" + h.hexdigest()


def save_moments(path: str | os.PathLike, moments: Mapping[str, torch.Tensor | str]) -> None:
    """Write the moments as safetensors (float32), keyed by name; string entries (K-FAC's
    layout) go into the file's metadata."""
    from safetensors.torch import save_file

    tensors = {
        k: t.detach().float().cpu().contiguous()
        for k, t in moments.items()
        if not isinstance(t, str)
    }
    metadata = {k: v for k, v in moments.items() if isinstance(v, str)}
    save_file(tensors, str(path), metadata=metadata or None)


def load_moments(path: str | os.PathLike) -> dict[str, torch.Tensor | str]:
    """Read moments written by :func:`save_moments`, its metadata as string entries."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
    return {**load_file(str(path)), **metadata}


def inverse_scales(
    moments: Mapping[str, torch.Tensor],
    blocks: Sequence[tuple[str, int]],
    eps: float = ADAM_EPS,
    device=None,
) -> dict[str, torch.Tensor]:
    """``1 / (sqrt(v) + eps)`` of each block (``(name, size)``), flattened row-major, float32,
    on ``device``. A block without moments, or of another size: ``ValueError``."""
    out = {}
    for name, size in blocks:
        if name not in moments:
            raise ValueError(f"the preconditioner has no second moments for '{name}'")
        v = moments[name].float()
        if v.numel() != size:
            raise ValueError(
                f"second moments of '{name}' have {v.numel()} entries, the weight {size}"
            )
        out[name] = (1.0 / (v.reshape(-1).clamp_min(0).sqrt() + eps)).to(device)
    return out


def preconditioning(kind: str, factors: dict | None) -> dict:
    """:class:`GradientComputer`'s keyword for a store's saved preconditioner: Adam's second
    moments or K-FAC's inverse roots (``kind``, the store's ``--precondition``)."""
    if factors is None or kind == "none":
        return {}
    return {"kfac": factors} if kind == "kfac" else {"preconditioner": factors}
