"""Padded batches and per-sample response-only losses, shared by the warm-up, the batched
gradients and the tests' one-sample-at-a-time reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from influcoder.groundtruth.tokenize import IGNORE_INDEX, TokenizedSample


def check_batch(batch: Sequence[TokenizedSample]) -> None:
    """Refuse an empty batch or a sample without loss, naming the row.

    Any object with ``input_ids`` and ``labels`` sequences is accepted (duck typing), so samples
    tokenized by other modules need no conversion; the checks don't trust their properties.
    """
    if not batch:
        raise ValueError("empty batch")
    for row, sample in enumerate(batch):
        input_ids, labels = getattr(sample, "input_ids", None), getattr(sample, "labels", None)
        if input_ids is None or labels is None:
            raise ValueError(f"row {row}: expected a TokenizedSample, got {type(sample).__name__}")
        if not input_ids or len(labels) != len(input_ids):
            raise ValueError(
                f"row {row}: labels ({len(labels)}) and input_ids ({len(input_ids)}) "
                "must have the same, non-zero length"
            )
        if all(label == IGNORE_INDEX for label in labels[1:]):
            raise ValueError(
                f"row {row}: the sample has no response tokens (every label after the "
                "first is -100), so it has no loss and no gradient"
            )


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s (first) parameters."""
    return next(model.parameters()).device


def pad_batch(
    batch: Sequence[TokenizedSample], pad_token_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a batch: ``input_ids`` (pad id), ``attention_mask`` (0), ``labels`` (-100)."""
    length = max(len(s.input_ids) for s in batch)
    input_ids = torch.full((len(batch), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
    labels = torch.full((len(batch), length), IGNORE_INDEX, dtype=torch.long)
    for row, sample in enumerate(batch):
        n = len(sample.input_ids)
        input_ids[row, :n] = torch.tensor(sample.input_ids)
        attention_mask[row, :n] = 1
        labels[row, :n] = torch.tensor(sample.labels)
    return input_ids.to(device), attention_mask.to(device), labels.to(device)


def _response_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample mean response loss ``[B]``, from logits ``[B, T, V]`` and labels ``[B, T]``.

    The labels are unshifted (as in :class:`TokenizedSample`); the logits at ``t`` are scored
    against ``labels[t + 1]``. Computed in float32 whatever the logits' dtype.
    """
    batch, length, vocab = logits.shape
    shift_labels = labels[:, 1:]
    token_losses = nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, vocab),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(batch, length - 1)
    return token_losses.sum(dim=1) / (shift_labels != IGNORE_INDEX).sum(dim=1)


def _kept_response_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample mean response loss ``[B]`` from logits ``[B, K, V]`` at kept positions and
    the tokens they predict, ``targets [B, K]`` (-100 where no loss is taken)."""
    batch, kept, vocab = logits.shape
    token_losses = nn.functional.cross_entropy(
        logits.float().reshape(-1, vocab),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(batch, kept)
    return token_losses.sum(dim=1) / (targets != IGNORE_INDEX).sum(dim=1)


#: the shortest prefix worth computing once for a whole batch (see :func:`shared_prefix_length`)
MIN_SHARED_PREFIX = 8


def shared_prefix_length(input_ids: torch.Tensor, labels: torch.Tensor) -> int:
    """How many leading tokens every row of a batch has in common (a chat template's system
    prompt) and that carry no loss, so that they can be run once for the whole batch: 0 for a
    single row or a prefix shorter than :data:`MIN_SHARED_PREFIX`."""
    batch, length = input_ids.shape
    if batch < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(dim=0).long().cumprod(dim=0)
    scored = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero()
    first_scored = int(scored[0]) if len(scored) else length - 1
    prefix = min(int(same.sum()), first_scored, length - 1)
    return prefix if prefix >= MIN_SHARED_PREFIX else 0


def _logits_after_shared_prefix(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prefix: int,
    keep: torch.Tensor,
) -> torch.Tensor:
    """The logits at positions ``keep`` of a right-padded batch whose rows share their first
    ``prefix`` tokens: the prefix runs once (one row), its keys and values are repeated for
    every row, and the rest of each row attends to them. The same numbers as one plain forward
    pass, to float rounding, with gradients flowing into the prefix's pass."""
    batch, length = input_ids.shape
    cache = model(input_ids=input_ids[:1, :prefix], use_cache=True).cache
    cache.batch_repeat_interleave(batch)
    positions = torch.arange(prefix, length, device=input_ids.device).expand(batch, -1)
    logits = model(
        input_ids=input_ids[:, prefix:],
        attention_mask=attention_mask,
        position_ids=positions,
        cache=cache,
        use_cache=False,
        logits_to_keep=keep - prefix,
    ).logits
    if logits.shape[1] != len(keep):  # a model that ignores logits_to_keep (TrOCR)
        logits = logits[:, keep - prefix]
    return logits


def response_losses(
    model: nn.Module,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    bf16: bool = False,
    share_prefix: bool = False,
) -> torch.Tensor:
    """Per-sample mean response loss ``[B]`` of a padded batch, from one forward pass.

    Only positions whose next token is a response token of some sample carry loss, so the LM
    head (a fifth of a small model's work, and with a large vocabulary the largest activation:
    ``B x T x V`` floats) runs on those alone. With ``bf16`` the forward pass runs under
    bfloat16 autocast; the loss is float32. With ``share_prefix`` the tokens every row starts
    with (:func:`shared_prefix_length`) run once for the batch; only for decoders whose cache
    and position ids are known to reproduce the plain pass (the caller checks: see
    :class:`~influcoder.validation.retrain.Retrainer`), and never for per-sample gradients
    (the shared pass sums the rows' gradients).
    """
    keep = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
    device = attention_mask.device
    prefix = (
        shared_prefix_length(input_ids, labels) if share_prefix and input_ids is not None else 0
    )
    if inputs_embeds is not None and hasattr(model, "get_base_model"):
        # PEFT's wrapper refuses inputs_embeds for MPT (whose forward takes them); its LoRA
        # layers sit inside the base model, so calling that is the same forward pass
        model = model.get_base_model()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        if prefix:
            logits = _logits_after_shared_prefix(model, input_ids, attention_mask, prefix, keep)
        else:
            logits = model(
                input_ids=input_ids,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                use_cache=False,
                logits_to_keep=keep,
            ).logits
            if logits.shape[1] != len(keep):  # a model that ignores logits_to_keep (TrOCR)
                logits = logits[:, keep]
    return _kept_response_losses(logits, labels[:, keep + 1])


def checked_unit_rows(vectors: torch.Tensor) -> np.ndarray:
    """Scale each row to unit L2 norm; a zero or non-finite row is an error, never a NaN."""
    return unit_rows_and_norms(vectors)[0]


def unit_rows_and_norms(vectors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(unit rows, their L2 norms before scaling)``, float32 numpy; a zero or non-finite
    row is an error, never a NaN."""
    norms = vectors.norm(dim=1)
    bad = (~torch.isfinite(norms) | (norms == 0)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"row(s) {bad}: the gradient is zero or not finite, so it has no "
            "direction (is the LM head zero, or did bf16 overflow?)"
        )
    unit = (vectors / norms[:, None]).cpu().numpy().astype(np.float32, copy=False)
    return unit, norms.cpu().numpy().astype(np.float32, copy=False)


class FrozenExcept:
    """Context manager: freeze every parameter but ``trainable``; restore flags and mode on exit."""

    def __init__(self, model: nn.Module, trainable: Sequence[nn.Parameter], *, train: bool):
        self._model, self._trainable, self._train = model, trainable, train

    def __enter__(self):
        self._flags = [(p, p.requires_grad) for p in self._model.parameters()]
        self._was_training = self._model.training
        for p, _ in self._flags:
            p.requires_grad_(False)
        for p in self._trainable:
            p.requires_grad_(True)
        self._model.train(self._train)
        return self

    def __exit__(self, *exc):
        for p, flag in self._flags:
            p.requires_grad_(flag)
        self._model.train(self._was_training)
        return False
