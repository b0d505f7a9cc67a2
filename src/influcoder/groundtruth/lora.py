"""LoRA adapters for the ground truth: attach a seeded one, load a user's, name the weights
whose gradients are taken, digest them, and the short warm-up (LESS's) that lets a fresh
adapter see the data before its gradients are taken.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn
from tqdm.auto import tqdm

from influcoder.groundtruth.lora_targets import LINEAR_TYPES, outside_text_decoder, text_modules
from influcoder.groundtruth.loss import (
    FrozenExcept,
    check_batch,
    model_device,
    pad_batch,
    response_losses,
)
from influcoder.groundtruth.settings import (
    DEFAULT_LORA_ALPHA,
    DEFAULT_LORA_RANK,
    DEFAULT_LORA_TARGETS,
    GRADIENT_TARGETS,
)
from influcoder.groundtruth.tokenize import TokenizedSample


def adapter_digest(model) -> str:
    """SHA-256 of the LoRA weights (names and float32 bytes)."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if "lora_" in name:
            h.update(name.encode() + b"\0")
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return "sha256:" + h.hexdigest()


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


def attach_lora(
    model: nn.Module,
    *,
    rank: int = DEFAULT_LORA_RANK,
    alpha: float = DEFAULT_LORA_ALPHA,
    targets: Sequence[str] = DEFAULT_LORA_TARGETS,
    seed: int = 0,
    layers: Sequence[int] | None = None,
) -> PeftModel:
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
            Each must match at least one ``nn.Linear`` or GPT-2 ``Conv1D`` (adapted with PEFT's
            ``fan_in_fan_out``); embeddings and the LM head are refused. Only the text
            decoder is matched: a multimodal model's vision or audio tower gets no LoRA.
        seed: Seed of the A matrices.
        layers: Indices of the transformer blocks that get LoRA (PEFT's
            ``layers_to_transform``); None: every block.

    Raises:
        ValueError: bad rank/alpha, a target that matches nothing, a non-Linear module, the
            embeddings or the LM head, a layer with no target, or a model that already has an
            adapter.
    """
    if isinstance(model, PeftModel):
        raise ValueError("the model already has an adapter; pass the base model")
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if alpha <= 0:
        raise ValueError(f"LoRA alpha must be > 0, got {alpha}")
    if isinstance(targets, str) or not targets:
        raise ValueError(
            f"targets must be a non-empty sequence of module-name suffixes, got {targets!r}"
        )
    embedding_weights = _embedding_weights(model)
    transposed = set()
    text = text_modules(model)
    for suffix in targets:
        matched = [(name, module) for name, module in text if _name_matches(name, suffix)]
        if not matched:
            raise ValueError(f"LoRA target '{suffix}' matches no module of the model")
        for name, module in matched:
            if id(getattr(module, "weight", None)) in embedding_weights:
                raise ValueError(
                    f"LoRA target '{suffix}' matches '{name}', an embedding or the LM "
                    "head; those are never targets"
                )
            if not isinstance(module, LINEAR_TYPES):
                raise ValueError(
                    f"LoRA target '{suffix}' matches '{name}', a "
                    f"{type(module).__name__}; only nn.Linear and Conv1D modules are supported"
                )
            transposed.add(not isinstance(module, nn.Linear))  # Conv1D: weight [in, out]
    if len(transposed) > 1:
        raise ValueError(
            f"LoRA targets {list(targets)} mix nn.Linear and Conv1D modules; "
            "adapt one kind at a time"
        )
    text_names = {name for name, _ in text}
    outside = [  # a multimodal model's towers: PEFT would adapt their matching modules too
        name
        for name, _ in model.named_modules()
        if name not in text_names and any(_name_matches(name, s) for s in targets)
    ]
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(targets),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        layers_to_transform=None if layers is None else list(layers),
        fan_in_fan_out=transposed == {True},
        exclude_modules=outside_text_decoder(model) if outside else None,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and not isinstance(
            module.get_base_layer(), LINEAR_TYPES
        ):  # PEFT maps MLP names onto fused mixture-of-experts parameters
            raise ValueError(
                f"LoRA targets {list(targets)}: PEFT puts LoRA on '{name.split('model.', 2)[-1]}' "
                f"({type(module.get_base_layer()).__name__}: fused experts); target the "
                "attention projections only, or use --lora-targets auto"
            )
    if layers is not None:
        adapted = {
            int(part)
            for name, _ in gradient_modules(peft_model, "lora")
            for part in name.split(".")
            if part.isdigit()
        }
        missing = sorted(set(layers) - adapted)
        if missing:
            raise ValueError(f"LoRA layers {missing}: no target module found in them")
    return peft_model.eval()


def load_adapter(model: nn.Module, adapter_dir: str | os.PathLike) -> PeftModel:
    """Load a saved LoRA adapter onto ``model`` (trainable, so :func:`warmup` can continue it).

    Returns the ``peft.PeftModel`` in eval mode. ``model`` is modified in place.
    """
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True).eval()


def gradient_modules(model: nn.Module, target: str) -> list[tuple[str, nn.Module]]:
    """The Linear (or GPT-2 ``Conv1D``, for ``"full"``) modules whose weight gradients make up a sample's vector, sorted by name.

    Args:
        model: A causal LM, with a PEFT LoRA adapter for the ``"lora"`` targets.
        target: ``"lora"``: every ``lora_A`` and ``lora_B`` Linear of the active adapter(s).
            ``"lora-b"``: only the ``lora_B`` ones. ``"full"``: the base projections: for a
            PEFT model the ``base_layer`` of each LoRA layer, for a plain model every
            ``nn.Linear`` of its text decoder whose name ends with one of
            ``DEFAULT_LORA_TARGETS``.

    The input embeddings and the LM head are never included, even when an adapter wraps them.
    The order fixes the layout of an unprojected gradient and the sketch block names
    (``f"{name}.weight"``), so it is part of a store's identity.

    Raises:
        ValueError: unknown target, a ``"lora"`` target on a model without LoRA layers, a
            merged adapter, a non-Linear LoRA layer, or nothing found.
    """
    if target not in GRADIENT_TARGETS:
        raise ValueError(f"unknown gradient target {target!r}; choose one of {GRADIENT_TARGETS}")
    embedding_weights = _embedding_weights(model)
    lora_layers = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer)
        and id(module.get_base_layer().weight) not in embedding_weights
    ]
    found: list[tuple[str, nn.Module]] = []
    if target == "full":
        if lora_layers:
            found = [(f"{name}.base_layer", layer.get_base_layer()) for name, layer in lora_layers]
        else:
            found = [
                (name, module)
                for name, module in text_modules(model)
                if isinstance(module, LINEAR_TYPES)
                and id(module.weight) not in embedding_weights
                and any(_name_matches(name, suffix) for suffix in DEFAULT_LORA_TARGETS)
            ]
    else:
        if not lora_layers:
            raise ValueError(
                f"target {target!r} needs a model with a LoRA adapter "
                "(see attach_lora / load_adapter)"
            )
        kinds = ("lora_A", "lora_B") if target == "lora" else ("lora_B",)
        for name, layer in lora_layers:
            if layer.merged:
                raise ValueError(
                    f"the adapter of '{name}' is merged into the base weights; "
                    "unmerge it to take LoRA gradients"
                )
            for adapter in layer.active_adapters:
                for kind in kinds:
                    modules = getattr(layer, kind)
                    if adapter in modules:
                        found.append((f"{name}.{kind}.{adapter}", modules[adapter]))
    for name, module in found:
        if not isinstance(module, LINEAR_TYPES):
            raise ValueError(
                f"'{name}' is a {type(module).__name__}; only nn.Linear and Conv1D layers "
                "are supported"
            )
    if not found:
        raise ValueError(f"the model has no Linear modules for target {target!r}")
    return sorted(found, key=lambda item: item[0])


def warmup(
    model: PeftModel,
    batches: Sequence[Sequence[TokenizedSample]],
    *,
    steps: int,
    lr: float,
    seed: int,
    progress: bool = False,
    max_tokens: int | None = None,
    gradient_checkpointing: bool = False,
    bf16: bool = False,
    moments: dict | None = None,
    share_prefix: bool = False,
) -> list[float]:
    """Train the LoRA adapter of ``model`` for a few steps (LESS's warm-up), in place.

    A fresh adapter has B = 0, so its A gradients are all zero and its B gradients only see the
    frozen A. LESS trains the adapter briefly on a slice of the data before taking gradients;
    this is that step. AdamW (no weight decay) on the LoRA weights only, on the batch mean of the
    per-sample mean response losses, visiting ``batches`` in the given order and cycling until
    ``steps`` steps are done. Torch's RNG is seeded with ``seed`` inside ``fork_rng`` for the
    duration (it only matters for models with dropout), so a seed gives the same adapter.

    A step's gradient is accumulated over micro-batches of at most ``max_tokens`` padded
    positions (:class:`~influcoder.groundtruth.memory.TokenBudget`, halved on out-of-memory), so
    memory is bounded whatever ``batches`` hold; the step is the same, to float rounding. A
    micro-batch that runs out of memory leaves the accumulated gradient as it was before it.

    Args:
        model: A ``peft.PeftModel`` with a LoRA adapter.
        batches: Non-empty list of non-empty batches; each is one optimiser step.
        steps: Number of optimiser steps (0 is allowed and does nothing).
        lr: AdamW learning rate.
        seed: Seed of torch's RNG during training.
        progress: Show a progress bar with the loss and an ETA.
        max_tokens: Most padded positions per forward/backward pass; None: a whole batch.
        gradient_checkpointing: Recompute the decoder layers' activations in the backward pass.
        bf16: Run the forward/backward passes under bfloat16 autocast (the loss is float32).
        moments: A dict to fill with AdamW's bias-corrected second moments after the last
            step, ``f"{module name}.weight"`` -> tensor (float32, CPU), for Adam
            preconditioning (:mod:`influcoder.groundtruth.precondition`); needs ``steps > 0``.
        share_prefix: Run the tokens a micro-batch's rows all start with once
            (:func:`~influcoder.groundtruth.loss.response_losses`); the same step to float
            rounding, for decoders checked to support it.

    Returns:
        The loss of each step, measured before that step's update. The model is left in eval
        mode with its ``requires_grad`` flags as they were and no ``.grad`` on the LoRA weights.
    """
    from influcoder.groundtruth.memory import TokenBudget, checkpointing

    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not batches:
        raise ValueError("warmup needs at least one batch")
    for batch in batches:
        check_batch(batch)
    named = [(f"{name}.weight", module.weight) for name, module in gradient_modules(model, "lora")]
    params = [p for _, p in named]
    if moments is not None and steps == 0:
        raise ValueError("second moments need at least one warm-up step")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    device = model_device(model)
    longest = max(len(s.input_ids) * len(batch) for batch in batches for s in batch)
    budget = TokenBudget(max(len(batch) for batch in batches), max_tokens or longest)

    def micro_batch(batch, rows) -> float:
        saved = [None if p.grad is None else p.grad.clone() for p in params]
        try:
            input_ids, attention_mask, labels = pad_batch(
                [batch[r] for r in rows], _WARMUP_PAD_ID, device
            )
            losses = response_losses(
                model,
                attention_mask,
                labels,
                input_ids=input_ids,
                bf16=bf16,
                share_prefix=share_prefix,
            )
            loss = losses.sum() / len(batch)
            loss.backward()
            return loss.item()
        except BaseException:
            for p, grad in zip(params, saved):
                p.grad = grad
            raise

    losses = []
    try:
        with (
            torch.random.fork_rng(),
            torch.enable_grad(),
            FrozenExcept(model, params, train=True),
            checkpointing(model, gradient_checkpointing),
        ):
            torch.manual_seed(seed)
            bar = tqdm(range(steps), desc="warm-up", unit="step", disable=not progress)
            for step in bar:
                batch = batches[step % len(batches)]
                optimizer.zero_grad(set_to_none=True)
                lengths = [len(s.input_ids) for s in batch]
                loss = sum(
                    part
                    for _, part in budget.run(
                        lengths, lambda rows, batch=batch: micro_batch(batch, rows)
                    )
                )
                optimizer.step()
                losses.append(loss)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if moments is not None:
                from influcoder.groundtruth.precondition import adam_moments

                moments.update(adam_moments(optimizer, named))
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.eval()
    return losses
