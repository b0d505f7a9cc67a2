"""Slow, obviously correct references that the fast paths are tested against (never used by
the library itself).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from influcoder.groundtruth.gradients import _blocks
from influcoder.groundtruth.lora import gradient_modules
from influcoder.groundtruth.loss import (
    FrozenExcept,
    check_batch,
    model_device,
    unit_rows_and_norms,
)
from influcoder.groundtruth.settings import DEFAULT_SKETCH_DIM, DEFAULT_SKETCH_SEED
from influcoder.groundtruth.sketch import CountSketch
from influcoder.groundtruth.tokenize import TokenizedSample


def reference_gradients(
    model: nn.Module,
    batch: Sequence[TokenizedSample],
    *,
    target: str = "lora",
    sketch_dim: int = DEFAULT_SKETCH_DIM,
    sketch_seed: int = DEFAULT_SKETCH_SEED,
    second_moments=None,
    eps: float = 1e-8,
    with_norms: bool = False,
    kfac=None,
):
    """The slow, obviously-correct version of :class:`GradientComputer` (tests only).

    One sample at a time: ``model(input_ids, labels=labels).loss`` (Hugging Face's mean
    next-token loss over the non-ignored labels), ``loss.backward()``, the ``.weight.grad`` of each
    of :func:`gradient_modules` flattened and concatenated, multiplied by the dense
    :func:`countsketch_matrix` (unless ``sketch_dim`` is 0), L2-normalised.
    The matrix is applied one weight block at a time, which is the same product: memory is that of
    the largest block's ``[numel, sketch_dim]`` matrix (400 MB for SmolLM2-135M's largest LoRA
    block at 8192; a full-model sketch of a real model is out of the reference's reach).
    The model's mode, flags and the hooked weights' ``.grad`` are restored afterwards.

    ``second_moments`` (``f"{module name}.weight"`` -> a tensor of the weight's shape):
    each weight's gradient is divided elementwise by ``sqrt(v) + eps`` before anything else
    (Adam preconditioning). ``with_norms``: also return each row's norm before normalising.
    ``kfac`` (K-FAC factors by weight name, ``f"{weight}.kfac_in"`` and ``".kfac_out"``, or
    their damped inverse roots, ``weight -> (A^-1/2, S^-1/2)``): each weight gradient ``G`` (as
    ``[out, in]``) becomes ``S^-1/2 G A^-1/2``, the roots of factors taken by
    ``kfac.inverse_root``.
    """
    if sketch_dim < 0:
        raise ValueError(f"sketch_dim must be >= 0 (0: no projection), got {sketch_dim}")
    check_batch(batch)
    modules = gradient_modules(model, target)
    weights = [module.weight for _, module in modules]
    saved_grads = [w.grad for w in weights]
    device = model_device(model)
    rows = []
    try:
        with torch.enable_grad(), FrozenExcept(model, weights, train=False):
            for sample in batch:
                for w in weights:
                    w.grad = None
                input_ids = torch.tensor([sample.input_ids], device=device)
                labels = torch.tensor([sample.labels], device=device)
                # the mean next-token loss over the response, from the logits (not the model's
                # own .loss: TrOCR's does not shift the labels)
                logits = model(input_ids=input_ids, use_cache=False).logits[0, :-1]
                nn.functional.cross_entropy(logits, labels[0, 1:], ignore_index=-100).backward()
                grads = [
                    (w.grad if w.grad is not None else torch.zeros_like(w)).float() for w in weights
                ]
                if second_moments is not None:
                    grads = [
                        g / (second_moments[f"{name}.weight"].to(g.device).float().sqrt() + eps)
                        for g, (name, _) in zip(grads, modules)
                    ]
                if kfac is not None:
                    grads = [
                        _kfac_apply(g, kfac, f"{name}.weight", isinstance(module, nn.Linear))
                        for g, (name, module) in zip(grads, modules)
                    ]
                rows.append(torch.cat([g.reshape(-1) for g in grads]))
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
            projected += vectors[:, offset : offset + n] @ matrix
            offset += n
        vectors = projected
    unit, norms = unit_rows_and_norms(vectors)
    return (unit, norms) if with_norms else unit


def _kfac_apply(grad: torch.Tensor, factors, name: str, linear: bool) -> torch.Tensor:
    """``S^-1/2 G A^-1/2`` for a Linear's ``[out, in]`` gradient (a Conv1D's is ``[in, out]``)."""
    from influcoder.groundtruth.kfac import inverse_root

    if name in factors:
        root_in, root_out = (root.to(grad.device) for root in factors[name])
    else:
        root_in = inverse_root(factors[name + ".kfac_in"]).to(grad.device)
        root_out = inverse_root(factors[name + ".kfac_out"]).to(grad.device)
    g = grad if linear else grad.T
    g = root_out @ g @ root_in
    return g if linear else g.T


def reference_kfac(model: nn.Module, batch: Sequence[TokenizedSample], modules) -> dict:
    """The slow K-FAC factors: one sample at a time (no padding), each module's input rows
    kept by a forward hook and its output's gradient taken with ``torch.autograd.grad`` of the
    sample's mean response loss; ``x x^T`` and ``g g^T`` summed over every token of every
    sample and divided by the number of tokens."""
    device = model_device(model)
    sums, tokens = {}, 0
    with torch.enable_grad(), FrozenExcept(model, [], train=False):
        inputs, outputs = {}, {}
        for sample in batch:

            def keep(name):
                def hook(module, args, output):
                    inputs[name], outputs[name] = args[0].detach(), output

                return hook

            handles = [m.register_forward_hook(keep(n)) for n, m in modules]
            try:
                ids = torch.tensor([sample.input_ids], device=device)
                embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
                labels = torch.tensor([sample.labels], device=device)
                loss = model(inputs_embeds=embeds, labels=labels, use_cache=False).loss
                names = [n for n, _ in modules]
                grads = torch.autograd.grad(loss, [outputs[n] for n in names])
            finally:
                for h in handles:
                    h.remove()
            tokens += len(sample.input_ids)
            for name, g in zip(names, grads):
                x = inputs[name].reshape(-1, inputs[name].shape[-1]).double()
                g = g.reshape(-1, g.shape[-1]).double()
                for key, rows in ((".weight.kfac_in", x), (".weight.kfac_out", g)):
                    outer = sum(torch.outer(r, r) for r in rows)
                    sums[name + key] = sums.get(name + key, 0) + outer
    return {key: (total / tokens).float().cpu() for key, total in sums.items()}


def countsketch_matrix(sketch: CountSketch, blocks: list[tuple[str, int]]) -> torch.Tensor:
    """The explicit dense ``[D, dim]`` matrix ``S`` of ``sketch`` over ``blocks`` (the reference).

    ``blocks`` lists ``(name, size)`` in concatenation order; ``D`` is the sum of the sizes.
    ``S[offset + i, h_i] = s_i``, so ``concatenated_x @ S`` equals the sum of
    ``sketch.project(name, block_x)`` over the blocks. Built with a plain loop, one entry at a
    time: it is the obviously-correct reference, not something to use on a real model.
    """
    total = sum(n for _, n in blocks)
    matrix = np.zeros((total, sketch.dim), dtype=np.float32)
    offset = 0
    for name, n in blocks:
        h, s = sketch.hashes(name, n)
        for i in range(n):
            matrix[offset + i, h[i]] = s[i]
        offset += n
    return torch.from_numpy(matrix)


def gaussian_projection(x: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """Dense Johnson-Lindenstrauss projection ``x @ G``, ``G ~ N(0, 1/dim)`` of shape ``[D, dim]``.

    A baseline for tests and benchmarks on small ``D``: it materialises ``G`` (``D * dim`` floats).
    ``E ||x G||^2 = ||x||^2``. Drawn with a torch generator seeded with ``seed``, on the CPU.
    """
    if x.ndim != 2:
        raise ValueError(f"x must be [batch, D], got shape {tuple(x.shape)}")
    if dim < 1:
        raise ValueError(f"projection dim must be >= 1, got {dim}")
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(x.shape[1], dim, generator=generator) / math.sqrt(dim)
    return x.to(torch.float32) @ matrix.to(x.device)


def reference_select(
    vectors: np.ndarray, targets: np.ndarray, count: int, *, how: str = "max", spread: bool = False
) -> tuple[list[int], list[float], list[int]]:
    """:func:`influcoder.attribution.select.select_rows` by brute force over the whole score
    matrix: ``(rows, scores, targets)`` in the order chosen.

    Aggregate: every pool row's ``how`` (mean, sum or max) of its cosines to the targets, the
    ``count`` highest (ties: lower row first), each with the target it scores highest with.
    Spread: targets take turns in their order, each taking the row of its highest cosine not
    taken yet (ties: lower row first), one row per turn, until ``count`` rows are taken.
    """
    scores = np.asarray(vectors, dtype=np.float64) @ np.asarray(targets, dtype=np.float64).T
    n, n_targets = scores.shape
    if not spread:
        agg = {"mean": scores.mean(axis=1), "sum": scores.sum(axis=1), "max": scores.max(axis=1)}[
            how
        ]
        ranked = sorted(range(n), key=lambda r: (-agg[r], r))[:count]
        return ranked, [float(agg[r]) for r in ranked], [int(scores[r].argmax()) for r in ranked]
    prefs = [sorted(range(n), key=lambda r, j=j: (-scores[r, j], r)) for j in range(n_targets)]
    taken: set[int] = set()
    rows, picked, whose = [], [], []
    while len(rows) < count:
        for j in range(n_targets):
            if len(rows) == count:
                break
            row = next(r for r in prefs[j] if r not in taken)
            taken.add(row)
            rows.append(row)
            picked.append(float(scores[row, j]))
            whose.append(j)
    return rows, picked, whose


def reference_group_stats(
    scores: np.ndarray, labels: Sequence[str], *, temperature: float
) -> dict[str, dict[str, float]]:
    """Per-group statistics of one query's scores (one per pool sample), one group at a time
    with plain Python: ``{group: {"n", "mean", "sum", "max", "softmax"}}``; ``softmax`` is
    ``sum_i w_i s_i`` with ``w_i = exp(|s_i| / T) / sum_j exp(|s_j| / T)`` over the group,
    computed with :func:`math.exp` after subtracting the group's largest ``|s| / T``."""
    out = {}
    for group in dict.fromkeys(labels):
        s = [float(x) for x, g in zip(scores, labels) if g == group]
        top = max(abs(x) / temperature for x in s)
        w = [math.exp(abs(x) / temperature - top) for x in s]
        out[group] = {
            "n": len(s),
            "mean": sum(s) / len(s),
            "sum": sum(s),
            "max": max(s),
            "softmax": sum(wi * x for wi, x in zip(w, s)) / sum(w),
        }
    return out


def reference_group_fidelity(
    gt: np.ndarray, pred: np.ndarray, labels: Sequence[str], *, aggregate: str, temperature: float
) -> dict[str, float | int]:
    """:func:`influcoder.evaluation.group_fidelity.fidelity` of two ``[n_pool, n_query]``
    score matrices, one query at a time: each query's group scores by
    :func:`reference_group_stats`, ``scipy.stats.spearmanr`` over the groups (a constant input,
    NaN there, counts as 0 and as undefined), and the share of ``pred``'s top groups (every
    group equal to its maximum) that are among ``gt``'s top groups."""
    import warnings

    from scipy.stats import spearmanr

    rhos, tops, undefined = [], [], 0
    for j in range(gt.shape[1]):
        g = reference_group_stats(gt[:, j], labels, temperature=temperature)
        p = reference_group_stats(pred[:, j], labels, temperature=temperature)
        names = list(g)
        a = [g[name][aggregate] for name in names]
        b = [p[name][aggregate] for name in names]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = spearmanr(a, b).statistic
        if math.isnan(rho):
            undefined += 1
            rho = 0.0
        rhos.append(rho)
        pred_top = {name for name, x in zip(names, b) if x == max(b)}
        gt_top = {name for name, x in zip(names, a) if x == max(a)}
        tops.append(len(pred_top & gt_top) / len(pred_top))
    return {
        "group_spearman": sum(rhos) / len(rhos),
        "group_top1": sum(tops) / len(tops),
        "undefined": undefined,
    }
