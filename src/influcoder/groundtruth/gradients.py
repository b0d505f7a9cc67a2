"""Per-sample, response-only gradients of a decoder, sketched and L2-normalised.

This is the decoder stage of the pipeline: for each training or query sample (a prompt and a
response, tokenized elsewhere into :class:`TokenizedSample`) it returns one vector, the gradient
of the sample's loss with respect to some Linear weights, compressed by a
:class:`~influcoder.groundtruth.sketch.CountSketch` and scaled to unit length. The influence of a training
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
input ``x [B, T, in]`` (or ``[B * T, in]``, as OPT's MLP has it: reshaped back); a tensor hook on its output receives ``g = dL/dy [B, T, out]`` during the
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

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from influcoder.groundtruth.kfac import kfac_transforms
from influcoder.groundtruth.lora import gradient_modules
from influcoder.groundtruth.loss import (
    FrozenExcept,
    check_batch,
    model_device,
    pad_batch,
    response_losses,
    unit_rows_and_norms,
)
from influcoder.groundtruth.memory import checkpointing
from influcoder.groundtruth.precondition import ADAM_EPS, inverse_scales
from influcoder.groundtruth.settings import DEFAULT_SKETCH_DIM, DEFAULT_SKETCH_SEED
from influcoder.groundtruth.sketch import CountSketch
from influcoder.groundtruth.tokenize import TokenizedSample


def _blocks(modules: list[tuple[str, nn.Module]]) -> list[tuple[str, int]]:
    """Sketch blocks ``(parameter name, size)`` of the modules' weights, in order."""
    return [(f"{name}.weight", module.weight.numel()) for name, module in modules]


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
        gradient_checkpointing: Recompute each decoder layer's activations in the backward
            pass instead of keeping them (:func:`~influcoder.groundtruth.memory.checkpointing`):
            less memory, the same gradients, about 1.5x the time (measured on a CPU).
        preconditioner: Second moments ``v`` by block name (``f"{module name}.weight"``, the
            weight's shape; :mod:`~influcoder.groundtruth.precondition`): each per-sample
            gradient is divided elementwise by ``sqrt(v) + eps`` before it is sketched (Adam
            preconditioning). None: the plain gradient.
        eps: Added to ``sqrt(v)``.
        kfac: K-FAC factors (:func:`~influcoder.groundtruth.kfac.fit_kfac`), their damped
            inverse roots, or a preconditioner file's content
            (:func:`~influcoder.groundtruth.kfac.kfac_transforms`): each per-sample gradient
            ``G`` becomes ``S^-1/2 G A^-1/2`` (damped) before it is sketched. Not with
            ``preconditioner``.

    Calling it on a batch returns a ``[B, output_dim]`` float32 array, one unit-norm row per
    sample, in batch order. A row does not depend on the other samples in its batch.

    Example::

        >>> peft_model = attach_lora(model)
        >>> warmup(peft_model, [train_batch], steps=20, lr=1e-4, seed=0)
        >>> compute = GradientComputer(peft_model, target="lora", sketch_dim=8192)
        >>> vectors = compute(batch)             # [len(batch), 8192]
        >>> influence = vectors @ query_vectors.T  # cosines
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        target: str = "lora",
        sketch_dim: int = DEFAULT_SKETCH_DIM,
        sketch_seed: int = DEFAULT_SKETCH_SEED,
        bf16: bool = False,
        pad_token_id: int | None = 0,
        gradient_checkpointing: bool = False,
        preconditioner=None,
        eps: float = ADAM_EPS,
        kfac=None,
    ):
        if preconditioner is not None and kfac is not None:
            raise ValueError("Adam and K-FAC preconditioning do not combine")
        if sketch_dim < 0:
            raise ValueError(f"sketch_dim must be >= 0 (0: no projection), got {sketch_dim}")
        if pad_token_id is not None and pad_token_id < 0:
            raise ValueError(f"pad_token_id must be >= 0, got {pad_token_id}")
        self.model = model
        self.target = target
        self.bf16 = bf16
        self.gradient_checkpointing = gradient_checkpointing
        self.pad_token_id = 0 if pad_token_id is None else pad_token_id
        self._modules = gradient_modules(model, target)
        self._blocks = _blocks(self._modules)
        self._sketch = CountSketch(sketch_dim, sketch_seed) if sketch_dim else None
        offsets = np.cumsum([0] + [n for _, n in self._blocks]).tolist()
        self._slices = {
            name: slice(start, stop)
            for (name, _), start, stop in zip(self._blocks, offsets, offsets[1:])
        }
        self._output_dim = sketch_dim or offsets[-1]
        self._scales = (
            None
            if preconditioner is None
            else inverse_scales(preconditioner, self._blocks, eps, model_device(model))
        )
        self._kfac = (
            None
            if kfac is None
            else kfac_transforms(kfac, self._blocks, device=model_device(model))
        )

    @property
    def output_dim(self) -> int:
        """Length of each returned vector: the sketch dim, or the number of gradient entries."""
        return self._output_dim

    def _accumulate(self, out: torch.Tensor, block: str, per_sample: torch.Tensor) -> None:
        """Add one module's per-sample gradients ``[B, out * in]`` to the output rows."""
        if self._scales is not None:
            per_sample = per_sample * self._scales[block].to(per_sample.device)
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
            if not output.requires_grad:
                # the no-grad first pass of a checkpointed layer: the hook is registered when
                # the backward pass recomputes the layer
                return
            inputs = args[0].detach()
            # weight [out, in] (Linear) or [in, out] (GPT-2's Conv1D): the gradient's layout
            layout = "bto,bti->boi" if isinstance(module, nn.Linear) else "bto,bti->bio"

            def grad_hook(grad_output):
                # the batch size from the output rows, not the activations: OPT flattens
                # [B, T, d] to [B * T, d] before its MLP, which reshapes back row-major
                batch = out.shape[0]
                g = grad_output.reshape(batch, -1, grad_output.shape[-1]).float()
                x = inputs.reshape(batch, -1, inputs.shape[-1]).float()
                if self._kfac is not None:  # S^-1/2 G A^-1/2, token by token (both symmetric)
                    root_in, root_out = self._kfac[block]
                    g, x = g @ root_out, x @ root_in
                per_sample = torch.einsum(layout, g, x)
                self._accumulate(out, block, per_sample.reshape(batch, -1))

            output.register_hook(grad_hook)

        return forward_hook

    def __call__(self, batch: Sequence[TokenizedSample]) -> np.ndarray:
        return self.vectors_and_norms(batch)[0]

    def vectors_and_norms(self, batch: Sequence[TokenizedSample]) -> tuple[np.ndarray, np.ndarray]:
        """``(unit rows [B, output_dim], their norms [B] before normalisation)``: the norm
        of each sample's (preconditioned) sketched gradient, kept so that scores can be inner
        products as well as cosines."""
        check_batch(batch)
        device = model_device(self.model)
        input_ids, attention_mask, labels = pad_batch(batch, self.pad_token_id, device)
        out = torch.zeros(len(batch), self._output_dim, dtype=torch.float32, device=device)
        handles = []
        try:
            with (
                torch.enable_grad(),
                FrozenExcept(self.model, [], train=False),
                checkpointing(self.model, self.gradient_checkpointing),
            ):
                for (_, module), (block, _) in zip(self._modules, self._blocks):
                    handles.append(module.register_forward_hook(self._forward_hook(block, out)))
                # Root the backward pass at a detached copy of the embeddings: with every
                # parameter frozen, autograd then computes activation gradients only.
                embeds = self.model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
                loss = response_losses(
                    self.model, attention_mask, labels, inputs_embeds=embeds, bf16=self.bf16
                ).sum()
                # backward(), not autograd.grad(): reentrant checkpointing supports only it.
                # Only the detached embeddings can receive a .grad; it is dropped with them.
                loss.backward()
        finally:
            for handle in handles:
                handle.remove()
        return unit_rows_and_norms(out)
