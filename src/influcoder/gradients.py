"""Per-sample, response-only gradients of a decoder, sketched and L2-normalised.

This is the decoder stage of the pipeline: for each training or query sample (a prompt and a
response, tokenized elsewhere into :class:`TokenizedSample`) it returns one vector, the gradient
of the sample's loss with respect to some Linear weights, compressed by a
:class:`~influcoder.sketch.CountSketch` and scaled to unit length. The influence of a training
sample on a query is the cosine of their vectors, i.e. the dot product of two rows.

**The loss.** The mean next-token cross-entropy over the response tokens only (labels are -100 on
the prompt), with the usual causal shift: the logits at position ``t`` predict token ``t + 1``.
This is what Hugging Face's ``model(input_ids, labels=labels).loss`` computes for one sample.
Mean or sum gives the same direction, hence the same cosine (each vector is L2-normalised); the
mean is what the adapter warm-up trains on, so its losses read like the usual training loss.

**Which weights** (``target``, see :func:`gradient_modules`):

* ``"lora"``: the A and B matrices of a LoRA adapter (LESS). Cheap and small. On a *fresh*
  adapter B = 0, so every A gradient is exactly zero; warm the adapter up first (:func:`warmup`),
  as LESS does, or use ``"lora-b"``.
* ``"lora-b"``: only the B matrices. On a fresh adapter this drops nothing (the A part is zero)
  and halves the work.
* ``"full"``: the base attention and MLP projections. The most faithful and the most expensive.

Embeddings and the LM head are never included: their gradients are dominated by which tokens
occur, not by what the model learns from them.

**The fast path** (:class:`GradientComputer`): the batch is right-padded into one tensor and run
through one forward and one backward pass of ``sum over samples of each sample's mean loss``.
Samples don't interact in a decoder (no batch norm, eval mode, per-row attention), so the
gradient of that sum with respect to sample ``b``'s activations is the gradient of sample ``b``'s
own loss: nothing is rescaled by the batch size. A forward hook on each hooked Linear keeps its
input ``x [B, T, in]``; a tensor hook on its output receives ``g = dL/dy [B, T, out]`` during the
backward pass, and the per-sample weight gradient is ``einsum('bto,bti->boi', g, x)``. It is
sketched at once and dropped, so besides the activations the peak extra memory is one module's
per-sample gradients, ``B * out * in`` floats. Padded positions contribute nothing: their loss is
masked, and under causal attention no real position depends on a later (padded) one, so ``g`` is
exactly zero there (the tests check this).

No weight needs ``.grad`` for this: during the pass every parameter is frozen and the backward
pass is rooted at a detached copy of the input embeddings instead, so autograd computes only the
activation gradients the hooks need, never a batch-summed weight gradient, and no ``.grad`` of the
model is touched. ``requires_grad`` flags and the train/eval mode are restored afterwards.

Compared with ``torch.func.vmap(grad(...))`` over a functional copy of the model, the hook path
needs a single batched forward/backward of the ordinary ``nn.Module`` (HF models are awkward to
vmap: caches, masks, data-dependent control flow) and never materialises all per-sample
gradients at once.

With ``bf16=True`` the forward and backward passes run under ``torch.autocast`` in bfloat16 (the
loss itself in float32); the per-sample einsum and the sketch are always float32.

**The reference** (:func:`reference_gradients`) takes one sample at a time, calls
``model(input_ids, labels=labels).loss.backward()``, reads ``.weight.grad`` and projects with the
explicit dense sketch matrix. It is slow and obviously right; tests compare the two.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn
from tqdm.auto import tqdm

from influcoder.constants import (
    DEFAULT_LORA_RANK,
    DEFAULT_LORA_TARGETS,
    DEFAULT_SKETCH_DIM,
    DEFAULT_SKETCH_SEED,
)
from influcoder.data import IGNORE_INDEX, TokenizedSample
from influcoder.sketch import CountSketch, countsketch_matrix

__all__ = [
    "GradientComputer",
    "TokenizedSample",
    "attach_lora",
    "gradient_modules",
    "load_adapter",
    "reference_gradients",
    "warmup",
]


_TARGETS = ("lora", "lora-b", "full")
"""The weight sets :func:`gradient_modules` knows."""

_DEFAULT_LORA_ALPHA = 16

_WARMUP_PAD_ID = 0
"""Padding id used by :func:`warmup`. Any valid id does: padded positions carry no loss and,
under causal attention, influence no real position."""



def _base(module: nn.Module) -> nn.Module:
    """The wrapped layer of a PEFT LoRA layer, the module itself otherwise."""
    return module.get_base_layer() if isinstance(module, LoraLayer) else module


def _embedding_weights(model: nn.Module) -> set[int]:
    """``id`` of the input-embedding and LM-head weights (the same tensor when tied)."""
    ids = set()
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            ids.add(id(_base(module).weight))
    return ids


def _name_matches(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def attach_lora(model: nn.Module, *, rank: int = DEFAULT_LORA_RANK,
                alpha: float = _DEFAULT_LORA_ALPHA,
                targets: Sequence[str] = DEFAULT_LORA_TARGETS, seed: int = 0) -> PeftModel:
    """Wrap ``model`` in a fresh, seeded LoRA adapter and return the ``peft.PeftModel``.

    The adapter follows PEFT's defaults (A Kaiming-uniform, B = 0, so the model's outputs are
    unchanged) with no dropout and no bias. A is drawn from torch's CPU generator seeded with
    ``seed`` inside ``torch.random.fork_rng``: the same seed gives the same adapter, and the
    caller's global RNG state is left alone. ``model`` is modified in place (PEFT injects the
    LoRA layers into it).

    Args:
        model: A Hugging Face causal LM.
        rank: LoRA rank ``r``.
        alpha: LoRA ``alpha``; the update is scaled by ``alpha / rank``.
        targets: Module-name suffixes to adapt (``"q_proj"`` matches
            ``model.layers.0.self_attn.q_proj``).
            Each must match at least one ``nn.Linear``; embeddings and the LM head are refused.
        seed: Seed of the A matrices.

    Raises:
        ValueError: bad rank/alpha, a target that matches nothing, a non-Linear module, the
            embeddings or the LM head, or a model that already has an adapter.
    """
    if isinstance(model, PeftModel):
        raise ValueError("the model already has an adapter; pass the base model")
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if alpha <= 0:
        raise ValueError(f"LoRA alpha must be > 0, got {alpha}")
    if isinstance(targets, str) or not targets:
        raise ValueError("targets must be a non-empty sequence of module-name suffixes, "
                         f"got {targets!r}")
    embedding_weights = _embedding_weights(model)
    for suffix in targets:
        matched = [(name, module) for name, module in model.named_modules()
                   if _name_matches(name, suffix)]
        if not matched:
            raise ValueError(f"LoRA target '{suffix}' matches no module of the model")
        for name, module in matched:
            if id(getattr(module, "weight", None)) in embedding_weights:
                raise ValueError(f"LoRA target '{suffix}' matches '{name}', an embedding or the LM "
                                 "head; those are never targets")
            if not isinstance(module, nn.Linear):
                raise ValueError(f"LoRA target '{suffix}' matches '{name}', a "
                                 f"{type(module).__name__}; only nn.Linear modules are supported")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0,
                        bias="none", task_type="CAUSAL_LM")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
    return peft_model.eval()


def load_adapter(model: nn.Module, adapter_dir: str | os.PathLike) -> PeftModel:
    """Load a saved LoRA adapter onto ``model`` (trainable, so :func:`warmup` can continue it).

    Returns the ``peft.PeftModel`` in eval mode. ``model`` is modified in place.
    """
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True).eval()


def gradient_modules(model: nn.Module, target: str) -> list[tuple[str, nn.Linear]]:
    """The Linear modules whose weight gradients make up a sample's vector, sorted by name.

    Args:
        model: A causal LM, with a PEFT LoRA adapter for the ``"lora"`` targets.
        target: ``"lora"``: every ``lora_A`` and ``lora_B`` Linear of the active adapter(s).
            ``"lora-b"``: only the ``lora_B`` ones. ``"full"``: the base projections: for a
            PEFT model the ``base_layer`` of each LoRA layer, for a plain model every
            ``nn.Linear`` whose name ends with one of ``DEFAULT_LORA_TARGETS``.

    The input embeddings and the LM head are never included, even when an adapter wraps them.
    The order fixes the layout of an unprojected gradient and the sketch block names
    (``f"{name}.weight"``), so it is part of a store's identity.

    Raises:
        ValueError: unknown target, a ``"lora"`` target on a model without LoRA layers, a
            merged adapter, a non-Linear LoRA layer, or nothing found.
    """
    if target not in _TARGETS:
        raise ValueError(f"unknown gradient target {target!r}; choose one of {_TARGETS}")
    embedding_weights = _embedding_weights(model)
    lora_layers = [(name, module) for name, module in model.named_modules()
                   if isinstance(module, LoraLayer)
                   and id(module.get_base_layer().weight) not in embedding_weights]
    found: list[tuple[str, nn.Module]] = []
    if target == "full":
        if lora_layers:
            found = [(f"{name}.base_layer", layer.get_base_layer()) for name, layer in lora_layers]
        else:
            found = [(name, module) for name, module in model.named_modules()
                     if isinstance(module, nn.Linear) and id(module.weight) not in embedding_weights
                     and any(_name_matches(name, suffix) for suffix in DEFAULT_LORA_TARGETS)]
    else:
        if not lora_layers:
            raise ValueError(f"target {target!r} needs a model with a LoRA adapter "
                             "(see attach_lora / load_adapter)")
        kinds = ("lora_A", "lora_B") if target == "lora" else ("lora_B",)
        for name, layer in lora_layers:
            if layer.merged:
                raise ValueError(f"the adapter of '{name}' is merged into the base weights; "
                                 "unmerge it to take LoRA gradients")
            for adapter in layer.active_adapters:
                for kind in kinds:
                    modules = getattr(layer, kind)
                    if adapter in modules:
                        found.append((f"{name}.{kind}.{adapter}", modules[adapter]))
    for name, module in found:
        if not isinstance(module, nn.Linear):
            raise ValueError(f"'{name}' is a {type(module).__name__}; "
                             "only nn.Linear layers are supported")
    if not found:
        raise ValueError(f"the model has no Linear modules for target {target!r}")
    return sorted(found, key=lambda item: item[0])


def _blocks(modules: list[tuple[str, nn.Linear]]) -> list[tuple[str, int]]:
    """Sketch blocks ``(parameter name, size)`` of the modules' weights, in order."""
    return [(f"{name}.weight", module.weight.numel()) for name, module in modules]


def _check_batch(batch: Sequence[TokenizedSample]) -> None:
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
            raise ValueError(f"row {row}: labels ({len(labels)}) and input_ids ({len(input_ids)}) "
                             "must have the same, non-zero length")
        if all(label == IGNORE_INDEX for label in labels[1:]):
            raise ValueError(f"row {row}: the sample has no response tokens (every label after the "
                             "first is -100), so it has no loss and no gradient")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _pad(batch: Sequence[TokenizedSample], pad_token_id: int,
         device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
        logits[:, :-1].float().reshape(-1, vocab), shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="none").view(batch, length - 1)
    return token_losses.sum(dim=1) / (shift_labels != IGNORE_INDEX).sum(dim=1)


def _kept_response_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample mean response loss ``[B]`` from logits ``[B, K, V]`` at kept positions and
    the tokens they predict, ``targets [B, K]`` (-100 where no loss is taken)."""
    batch, kept, vocab = logits.shape
    token_losses = nn.functional.cross_entropy(
        logits.float().reshape(-1, vocab), targets.reshape(-1), ignore_index=IGNORE_INDEX,
        reduction="none").view(batch, kept)
    return token_losses.sum(dim=1) / (targets != IGNORE_INDEX).sum(dim=1)


def _normalise(vectors: torch.Tensor) -> np.ndarray:
    """Scale each row to unit L2 norm; a zero or non-finite row is an error, never a NaN."""
    norms = vectors.norm(dim=1)
    bad = (~torch.isfinite(norms) | (norms == 0)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"row(s) {bad}: the gradient is zero or not finite, so it has no "
                         "direction (is the LM head zero, or did bf16 overflow?)")
    return (vectors / norms[:, None]).cpu().numpy().astype(np.float32, copy=False)


class _FrozenExcept:
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


def warmup(model: PeftModel, batches: Sequence[Sequence[TokenizedSample]], *, steps: int, lr: float,
           seed: int, progress: bool = False) -> list[float]:
    """Train the LoRA adapter of ``model`` for a few steps (LESS's warm-up), in place.

    A fresh adapter has B = 0, so its A gradients are all zero and its B gradients only see the
    frozen A. LESS trains the adapter briefly on a slice of the data before taking gradients;
    this is that step. AdamW (no weight decay) on the LoRA weights only, on the batch mean of the
    per-sample mean response losses, visiting ``batches`` in the given order and cycling until
    ``steps`` steps are done. Torch's RNG is seeded with ``seed`` inside ``fork_rng`` for the
    duration (it only matters for models with dropout), so a seed gives the same adapter.

    Args:
        model: A ``peft.PeftModel`` with a LoRA adapter.
        batches: Non-empty list of non-empty batches.
        steps: Number of optimiser steps (0 is allowed and does nothing).
        lr: AdamW learning rate.
        seed: Seed of torch's RNG during training.
        progress: Show a progress bar with the loss and an ETA.

    Returns:
        The loss of each step, measured before that step's update. The model is left in eval
        mode with its ``requires_grad`` flags as they were and no ``.grad`` on the LoRA weights.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not batches:
        raise ValueError("warmup needs at least one batch")
    for batch in batches:
        _check_batch(batch)
    params = [module.weight for _, module in gradient_modules(model, "lora")]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    device = _device(model)
    losses = []
    try:
        with torch.random.fork_rng(), torch.enable_grad(), _FrozenExcept(model, params, train=True):
            torch.manual_seed(seed)
            bar = tqdm(range(steps), desc="warm-up", unit="step", disable=not progress)
            for step in bar:
                input_ids, attention_mask, labels = _pad(batches[step % len(batches)],
                                                         _WARMUP_PAD_ID, device)
                logits = model(input_ids=input_ids, attention_mask=attention_mask,
                               use_cache=False).logits
                loss = _response_losses(logits, labels).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.eval()
    return losses


class GradientComputer:
    """Batched per-sample gradients, sketched inside backward hooks (the fast path).

    Args:
        model: A causal LM (a ``peft.PeftModel`` for the ``"lora"`` targets). It is run in eval
            mode; its mode, ``requires_grad`` flags and ``.grad`` are left as they were.
        target: ``"lora"``, ``"lora-b"`` or ``"full"``; see :func:`gradient_modules`.
        sketch_dim: CountSketch dimension, or 0 for the raw gradient (the weights of
            :func:`gradient_modules`, each flattened row-major, concatenated in that order).
        sketch_seed: CountSketch seed.
        bf16: Run forward and backward under bfloat16 autocast (per-sample einsum and sketch stay
            float32). Faster on hardware with bf16 units, slightly less exact.
        pad_token_id: Id used to right-pad the batch; any valid id gives the same result.
            ``None`` (a tokenizer without a pad token) means 0.

    Calling it on a batch returns a ``[B, output_dim]`` float32 array, one unit-norm row per
    sample, in batch order. A row does not depend on the other samples in its batch.

    Example::

        >>> peft_model = attach_lora(model)
        >>> warmup(peft_model, [train_batch], steps=20, lr=1e-4, seed=0)
        >>> compute = GradientComputer(peft_model, target="lora", sketch_dim=8192)
        >>> vectors = compute(batch)             # [len(batch), 8192]
        >>> influence = vectors @ query_vectors.T  # cosines
    """

    def __init__(self, model: nn.Module, *, target: str = "lora",
                 sketch_dim: int = DEFAULT_SKETCH_DIM, sketch_seed: int = DEFAULT_SKETCH_SEED,
                 bf16: bool = False, pad_token_id: int | None = 0):
        if sketch_dim < 0:
            raise ValueError(f"sketch_dim must be >= 0 (0: no projection), got {sketch_dim}")
        if pad_token_id is not None and pad_token_id < 0:
            raise ValueError(f"pad_token_id must be >= 0, got {pad_token_id}")
        self.model = model
        self.target = target
        self.bf16 = bf16
        self.pad_token_id = 0 if pad_token_id is None else pad_token_id
        self._modules = gradient_modules(model, target)
        self._blocks = _blocks(self._modules)
        self._sketch = CountSketch(sketch_dim, sketch_seed) if sketch_dim else None
        offsets = np.cumsum([0] + [n for _, n in self._blocks]).tolist()
        self._slices = {name: slice(start, stop)
                        for (name, _), start, stop in zip(self._blocks, offsets, offsets[1:])}
        self._output_dim = sketch_dim or offsets[-1]

    @property
    def output_dim(self) -> int:
        """Length of each returned vector: the sketch dim, or the number of gradient entries."""
        return self._output_dim

    def _accumulate(self, out: torch.Tensor, block: str, per_sample: torch.Tensor) -> None:
        """Add one module's per-sample gradients ``[B, out * in]`` to the output rows."""
        if self._sketch is None:
            out[:, self._slices[block]] += per_sample
        else:
            self._sketch.project_into(out, block, per_sample)

    def _forward_hook(self, block: str, out: torch.Tensor) -> Callable:
        """Hook keeping a Linear's input and asking for its output's gradient.

        A module called twice in one forward (shared weights) registers two tensor hooks; both
        contributions are added, as they add up in the true gradient.
        """

        def forward_hook(module, args, output):
            inputs = args[0].detach()

            def grad_hook(grad_output):
                batch = grad_output.shape[0]
                per_sample = torch.einsum(
                    "bto,bti->boi",
                    grad_output.reshape(batch, -1, grad_output.shape[-1]).float(),
                    inputs.reshape(batch, -1, inputs.shape[-1]).float())
                self._accumulate(out, block, per_sample.reshape(batch, -1))

            output.register_hook(grad_hook)

        return forward_hook

    def __call__(self, batch: Sequence[TokenizedSample]) -> np.ndarray:
        _check_batch(batch)
        device = _device(self.model)
        input_ids, attention_mask, labels = _pad(batch, self.pad_token_id, device)
        out = torch.zeros(len(batch), self._output_dim, dtype=torch.float32, device=device)
        handles = []
        try:
            with torch.enable_grad(), _FrozenExcept(self.model, [], train=False):
                for (_, module), (block, _) in zip(self._modules, self._blocks):
                    handles.append(module.register_forward_hook(self._forward_hook(block, out)))
                # Root the backward pass at a detached copy of the embeddings: with every
                # parameter frozen, autograd then computes activation gradients only.
                embeds = self.model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
                # Only positions whose next token is a response token carry loss: the LM head
                # (a fifth of a small model's work) runs on those alone.
                keep = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    logits = self.model(inputs_embeds=embeds, attention_mask=attention_mask,
                                        use_cache=False, logits_to_keep=keep).logits
                loss = _kept_response_losses(logits, labels[:, keep + 1]).sum()
                torch.autograd.grad(loss, embeds)
        finally:
            for handle in handles:
                handle.remove()
        return _normalise(out)


def reference_gradients(model: nn.Module, batch: Sequence[TokenizedSample], *, target: str = "lora",
                        sketch_dim: int = DEFAULT_SKETCH_DIM,
                        sketch_seed: int = DEFAULT_SKETCH_SEED) -> np.ndarray:
    """The slow, obviously-correct version of :class:`GradientComputer` (tests only).

    One sample at a time: ``model(input_ids, labels=labels).loss`` (Hugging Face's mean
    next-token loss over the non-ignored labels), ``loss.backward()``, the ``.weight.grad`` of each
    of :func:`gradient_modules` flattened and concatenated, multiplied by the dense
    :func:`~influcoder.sketch.countsketch_matrix` (unless ``sketch_dim`` is 0), L2-normalised.
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

