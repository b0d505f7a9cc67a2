"""K-FAC preconditioning of per-sample LoRA gradients (Kronfluence, Bergson): fit and apply.

For a Linear module with input ``x`` and output gradient ``g`` at each token, a per-sample
weight gradient is ``G = sum_t g_t x_t^T``. K-FAC approximates the module's Fisher by a
Kronecker product of two factors, the input covariance ``A = E[x x^T]`` and the output-gradient
covariance ``S = E[g g^T]`` (each averaged over the real tokens of a sample of the data, with
the data's own labels: the empirical Fisher). With ``precondition="kfac"`` each per-sample
gradient becomes ``S^-1/2 G A^-1/2`` before it is sketched, on the training and the query side
alike, so that the inner product of two rows is ``g^T F^-1 q``: the influence function with
the K-FAC Fisher in place of the Hessian. Since ``G`` is a sum of outer products, this is
computed by transforming each token's ``x`` and ``g`` before the per-sample einsum.

Damping: each factor gets ``damping * mean eigenvalue`` added to its eigenvalues (0.1 by
default, Kronfluence's heuristic), which keeps the recipe independent of the loss's scale.

The factors are saved beside the store's adapter in the preconditioner file, keyed
``f"{module}.weight.kfac_in"`` and ``f"{module}.weight.kfac_out"``, so every store collected
``--like`` it uses the same ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from influcoder.groundtruth.loss import FrozenExcept, model_device, pad_batch, response_losses
from influcoder.groundtruth.tokenize import TokenizedSample

#: eigenvalue damping of each factor, as a share of its mean eigenvalue
KFAC_DAMPING = 0.1
IN_KEY, OUT_KEY = ".kfac_in", ".kfac_out"
_PAD_ID = 0


def fit_kfac(
    model,
    batches: Sequence[Sequence[TokenizedSample]],
    modules: Sequence[tuple[str, nn.Module]],
    *,
    bf16: bool = False,
) -> dict[str, torch.Tensor]:
    """K-FAC factors of each of ``modules`` (``(name, Linear or Conv1D)``), fitted on
    ``batches``: ``{f"{name}.weight.kfac_in": A [in, in], f"{name}.weight.kfac_out": S [out,
    out]}``, float32 on the CPU, each the mean over the real (unpadded) tokens of the batches of
    ``x x^T`` and ``g g^T``, ``g`` the gradient of the sum of the samples' mean response losses
    with respect to the module's output. The model's flags, mode and ``.grad`` are left as they
    were."""
    if not batches:
        raise ValueError("K-FAC factors need at least one batch")
    device = model_device(model)
    sums: dict[str, torch.Tensor] = {}
    tokens = torch.zeros((), dtype=torch.float64)
    mask_now: list[torch.Tensor] = []

    def add(key: str, rows: torch.Tensor) -> None:
        rows = rows.reshape(-1, rows.shape[-1]).float()[mask_now[0]]
        outer = rows.T @ rows
        sums[key] = outer if key not in sums else sums[key] + outer

    def hook(name: str):
        def forward_hook(module, args, output):
            add(name + ".weight" + IN_KEY, args[0].detach())
            output.register_hook(lambda g: add(name + ".weight" + OUT_KEY, g))

        return forward_hook

    handles = []
    try:
        with torch.enable_grad(), FrozenExcept(model, [], train=False):
            for name, module in modules:
                handles.append(module.register_forward_hook(hook(name)))
            for batch in batches:
                input_ids, attention_mask, labels = pad_batch(batch, _PAD_ID, device)
                mask_now[:] = [attention_mask.reshape(-1).bool()]
                tokens += float(mask_now[0].sum())
                embeds = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
                losses = response_losses(
                    model, attention_mask, labels, inputs_embeds=embeds, bf16=bf16
                )
                losses.sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    return {key: (total / float(tokens)).cpu() for key, total in sums.items()}


def inverse_root(factor: torch.Tensor, damping: float = KFAC_DAMPING) -> torch.Tensor:
    """``(factor + damping * mean eigenvalue * I)^-1/2`` of a symmetric PSD ``factor``
    (float64 eigendecomposition, returned float32)."""
    values, vectors = torch.linalg.eigh(factor.double())
    values = values.clamp_min(0)
    shift = damping * float(values.mean())
    if shift <= 0:  # an all-zero factor (a module the data never reached): leave it as is
        shift = 1.0
    return ((vectors * (values + shift).rsqrt()) @ vectors.T).float()


def kfac_transforms(
    factors: Mapping[str, torch.Tensor],
    blocks: Sequence[tuple[str, int]],
    damping: float = KFAC_DAMPING,
    device=None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per block (``(weight name, size)``): ``(A^-1/2, S^-1/2)``, damped, on ``device``. A
    block without factors, or whose factors do not make up its size: ``ValueError``."""
    out = {}
    for name, size in blocks:
        if name + IN_KEY not in factors or name + OUT_KEY not in factors:
            raise ValueError(f"the preconditioner has no K-FAC factors for '{name}'")
        a, s = factors[name + IN_KEY], factors[name + OUT_KEY]
        if a.shape[0] * s.shape[0] != size:
            raise ValueError(
                f"K-FAC factors of '{name}' are {a.shape[0]} x {s.shape[0]}, the weight has "
                f"{size} entries"
            )
        out[name] = (inverse_root(a, damping).to(device), inverse_root(s, damping).to(device))
    return out
