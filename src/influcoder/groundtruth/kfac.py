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

Modules that read the very same input tensor in a forward (the ``lora_A`` of q/k/v, of
gate/up) have one input factor, fitted and stored once. The preconditioner file beside the
store's adapter holds each factor's damped inverse root once (``f"{key}.inverse_root"``, its
upper triangle: the roots are symmetric) and, as its string metadata, the damping and each
block's pair of factor keys; every store collected ``--like`` it loads the roots instead of
decomposing the factors again. Files of the first layout (one pair of raw factors per block,
``f"{block}.kfac_in"`` and ``".kfac_out"``) are still read: their roots are computed as they
always were.
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from influcoder.groundtruth.loss import FrozenExcept, model_device, pad_batch, response_losses
from influcoder.groundtruth.tokenize import TokenizedSample

#: eigenvalue damping of each factor, as a share of its mean eigenvalue
KFAC_DAMPING = 0.1
IN_KEY, OUT_KEY = ".kfac_in", ".kfac_out"
#: suffix of a factor key naming its damped inverse root in the preconditioner file
ROOT_SUFFIX = ".inverse_root"
#: the preconditioner file's metadata entry describing the roots (damping, blocks' keys)
LAYOUT_KEY = "kfac"
_PAD_ID = 0


@dataclass(frozen=True)
class KfacFactors:
    """Fitted K-FAC factors: ``factors`` by key (``[n, n]`` float32, CPU), and each block's
    (weight name's) ``(input key, output key)`` in ``blocks``; blocks that read one input
    tensor share its key."""

    factors: dict[str, torch.Tensor]
    blocks: dict[str, tuple[str, str]]

    def per_block(self) -> dict[str, torch.Tensor]:
        """One pair per block, ``{f"{block}.kfac_in": A, f"{block}.kfac_out": S}`` (shared
        factors copied): the first file layout."""
        return {
            block + suffix: self.factors[key].clone()
            for block, keys in self.blocks.items()
            for suffix, key in zip((IN_KEY, OUT_KEY), keys)
        }

    def roots(self, damping: float = KFAC_DAMPING) -> KfacRoots:
        """The damped inverse root of each factor, decomposed once per key, made exactly
        symmetric (its upper triangle mirrored) so that a saved root reads back bit for bit."""
        roots = {
            key: unpack_upper(pack_upper(inverse_root(factor, damping)))
            for key, factor in self.factors.items()
        }
        return KfacRoots(roots, dict(self.blocks), damping)


@dataclass(frozen=True)
class KfacRoots:
    """Damped inverse roots by factor key (float32, CPU), each block's ``(input key, output
    key)``, and the damping they were taken with."""

    roots: dict[str, torch.Tensor]
    blocks: dict[str, tuple[str, str]]
    damping: float

    def saved(self) -> dict[str, torch.Tensor | str]:
        """The preconditioner file's content (:func:`~influcoder.groundtruth.precondition.
        save_moments`): each root once, its upper triangle (:func:`pack_upper`; the roots are
        symmetric), and the layout as a string (metadata)."""
        layout = {"damping": self.damping, "blocks": {b: list(k) for b, k in self.blocks.items()}}
        out: dict[str, torch.Tensor | str] = {
            key + ROOT_SUFFIX: pack_upper(root) for key, root in self.roots.items()
        }
        out[LAYOUT_KEY] = json.dumps(layout, sort_keys=True)
        return out

    @classmethod
    def from_saved(cls, saved: Mapping[str, torch.Tensor | str]) -> KfacRoots:
        """Read :meth:`saved`'s content back. A file without the layout, or whose blocks name
        roots it lacks: ``ValueError``."""
        if LAYOUT_KEY not in saved:
            raise ValueError("the preconditioner holds no K-FAC inverse roots")
        layout = json.loads(saved[LAYOUT_KEY])
        blocks = {block: (keys[0], keys[1]) for block, keys in layout["blocks"].items()}
        roots = {}
        for keys in blocks.values():
            for key in keys:
                if key + ROOT_SUFFIX not in saved:
                    raise ValueError(f"the preconditioner has no K-FAC inverse root '{key}'")
                roots[key] = unpack_upper(saved[key + ROOT_SUFFIX])
        return cls(roots, blocks, float(layout["damping"]))


def pack_upper(matrix: torch.Tensor) -> torch.Tensor:
    """The upper triangle (diagonal included) of a square ``matrix``, row by row: ``n (n +
    1) / 2`` entries."""
    rows, cols = torch.triu_indices(*matrix.shape)
    return matrix[rows, cols].contiguous()


def unpack_upper(packed: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix whose upper triangle :func:`pack_upper` gave. A length that is no
    triangle's: ``ValueError``."""
    n = (math.isqrt(8 * packed.numel() + 1) - 1) // 2
    if n * (n + 1) // 2 != packed.numel() or packed.dim() != 1:
        raise ValueError(f"{tuple(packed.shape)} entries are no packed upper triangle")
    rows, cols = torch.triu_indices(n, n)
    upper = packed.new_zeros(n, n)
    upper[rows, cols] = packed
    return upper + upper.triu(1).T


def fit_kfac(
    model,
    batches: Sequence[Sequence[TokenizedSample]],
    modules: Sequence[tuple[str, nn.Module]],
    *,
    bf16: bool = False,
) -> KfacFactors:
    """K-FAC factors of each of ``modules`` (``(name, Linear or Conv1D)``), fitted on
    ``batches``: for block ``f"{name}.weight"``, ``A [in, in]`` and ``S [out, out]``, each the
    mean over the real (unpadded) tokens of the batches of ``x x^T`` and ``g g^T``, ``g`` the
    gradient of the sum of the samples' mean response losses with respect to the module's
    output. Modules whose input is the same tensor object in every forward share one ``A``,
    accumulated once, keyed by the first of them to read it. The model's flags, mode and
    ``.grad`` are left as they were."""
    if not batches:
        raise ValueError("K-FAC factors need at least one batch")
    device = model_device(model)
    sums: dict[str, torch.Tensor] = {}
    tokens = torch.zeros((), dtype=torch.float64)
    mask_now: list[torch.Tensor] = []
    # this forward's inputs: id -> (weak reference, key of the first block that read it)
    seen: dict[int, tuple[weakref.ref, str]] = {}
    reads: dict[str, list[str]] = {}  # this forward: block -> key of each input it read
    inputs: dict[str, str] = {}  # block -> its input factor's key, the same in every forward

    def add(key: str, rows: torch.Tensor) -> None:
        rows = rows.reshape(-1, rows.shape[-1]).float()[mask_now[0]]
        outer = rows.T @ rows
        sums[key] = outer if key not in sums else sums[key] + outer

    def hook(block: str):
        def forward_hook(module, args, output):
            x = args[0]
            hit = seen.get(id(x))
            if hit is not None and hit[0]() is x:
                key = hit[1]
            else:
                key = block + IN_KEY
                seen[id(x)] = (weakref.ref(x), key)
                add(key, x.detach())
            reads.setdefault(block, []).append(key)
            output.register_hook(lambda g: add(block + OUT_KEY, g))

        return forward_hook

    handles = []
    try:
        with torch.enable_grad(), FrozenExcept(model, [], train=False):
            for name, module in modules:
                handles.append(module.register_forward_hook(hook(name + ".weight")))
            for batch in batches:
                input_ids, attention_mask, labels = pad_batch(batch, _PAD_ID, device)
                mask_now[:] = [attention_mask.reshape(-1).bool()]
                tokens += float(mask_now[0].sum())
                embeds = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
                seen.clear()
                reads.clear()
                losses = response_losses(
                    model, attention_mask, labels, inputs_embeds=embeds, bf16=bf16
                )
                _settle_inputs(reads, inputs)
                seen.clear()
                losses.sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    factors = {key: (total / float(tokens)).cpu() for key, total in sums.items()}
    blocks = {
        block: (key, block + OUT_KEY)
        for block, key in inputs.items()
        if key in factors and block + OUT_KEY in factors
    }
    return KfacFactors(factors, blocks)


def _settle_inputs(reads: Mapping[str, list[str]], inputs: dict[str, str]) -> None:
    """Check one forward's reads (block -> the key of each input it read) and record each
    block's input key in ``inputs``. A block may share another's key only when both read
    that one tensor once, and it must do so in every forward: else ``ValueError``."""
    for block, keys in reads.items():
        key = keys[0]
        if key != block + IN_KEY and (keys != [key] or reads.get(key[: -len(IN_KEY)]) != [key]):
            raise ValueError(
                f"'{block}' reads the input of '{key[: -len(IN_KEY)]}' but not only that "
                f"once: K-FAC can share an input factor only between single reads of a tensor"
            )
        if any(k != key for k in keys) or inputs.setdefault(block, key) != key:
            raise ValueError(f"'{block}' reads other inputs from one forward to the next")


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
    kfac: KfacFactors | KfacRoots | Mapping[str, torch.Tensor | str],
    blocks: Sequence[tuple[str, int]],
    damping: float = KFAC_DAMPING,
    device=None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per block (``(weight name, size)``): ``(A^-1/2, S^-1/2)``, damped, on ``device`` (a
    shared root is one tensor). ``kfac``: fitted factors, roots, or a preconditioner file's
    content in either layout (see the module docstring); only factors are decomposed. A block without factors, whose factors do not make up its size,
    or roots damped otherwise than ``damping``: ``ValueError``."""
    if isinstance(kfac, Mapping) and LAYOUT_KEY in kfac:
        kfac = KfacRoots.from_saved(kfac)
    elif isinstance(kfac, Mapping):  # the first layout: one pair of factors per block
        names = [name for name, _ in blocks]
        pairs = {
            n: (n + IN_KEY, n + OUT_KEY)
            for n in names
            if all(n + k in kfac for k in (IN_KEY, OUT_KEY))
        }
        kfac = KfacFactors(dict(kfac), pairs)
    if isinstance(kfac, KfacRoots) and kfac.damping != damping:
        raise ValueError(f"the K-FAC inverse roots were damped with {kfac.damping}, not {damping}")
    out, moved = {}, {}
    for name, size in blocks:
        if name not in kfac.blocks:
            raise ValueError(f"the preconditioner has no K-FAC factors for '{name}'")
        keys = kfac.blocks[name]
        tensors = kfac.roots if isinstance(kfac, KfacRoots) else kfac.factors
        n_in, n_out = (tensors[key].shape[0] for key in keys)
        if n_in * n_out != size:
            raise ValueError(
                f"K-FAC factors of '{name}' are {n_in} x {n_out}, the weight has {size} entries"
            )
        for key in keys:
            if key not in moved:
                root = (
                    tensors[key]
                    if isinstance(kfac, KfacRoots)
                    else inverse_root(tensors[key], damping)
                )
                moved[key] = root.float().to(device)
        out[name] = (moved[keys[0]], moved[keys[1]])
    return out
