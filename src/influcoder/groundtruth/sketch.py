"""Random projections that shrink per-sample gradients to a fixed, small dimension.

A LoRA gradient of a 135M-parameter decoder has millions of entries and a full-model gradient
has as many entries as the model; storing one per training sample is out of the question. We
store a random projection of it instead, chosen so that cosine similarities (our influence
score) survive.

:class:`CountSketch` is the projection we use. Each input coordinate ``i`` is sent to one bucket
``h(i)`` of the output with a random sign ``s(i)``::

    y[h(i)] += s(i) * x[i]

Trade-offs, against a dense Gaussian (Johnson-Lindenstrauss) matrix:

* **Cost.** Projecting costs O(D) instead of O(D * dim), and the "matrix" is two vectors of length
  D instead of D * dim floats (8192 x 10M floats would be 320 GB). The price is a somewhat higher
  variance on very sparse inputs, which gradients are not.
* **Blockwise.** The hashes of each named block (one weight matrix, flattened row-major) are
  drawn from their own seed, derived from the sketch seed and the block's name. Blocks can be
  projected one at a time, in any order, and their sum is exactly the projection of the
  concatenated vector. That is what lets :mod:`influcoder.groundtruth.gradients` project each module's
  per-sample gradients inside a backward hook and throw them away: the full gradient is never
  materialised.
* **Reproducible from the manifest.** The block seed is
  ``SeedSequence([seed, crc32(name)])`` fed to NumPy's ``default_rng`` (PCG64), which does not
  depend on Python's per-process string hashing, the platform or the torch version. A store that
  records ``(dim, seed)`` and the block names can be extended or queried years later.
* **Memory.** The hashes of a block are cached (``int64`` buckets plus ``float32`` signs, 12 bytes
  per coordinate) so repeated batches don't redraw them. For a full-model sketch of a 135M model
  that cache is about 1.6 GB; LoRA sketches need a few tens of MB.

Two references live here for tests and benchmarks only: :func:`countsketch_matrix`, the explicit
dense matrix of a :class:`CountSketch`, and :func:`gaussian_projection`, a dense JL projection.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

__all__ = ["CountSketch", "countsketch_matrix", "gaussian_projection"]


class CountSketch:
    """A seeded CountSketch from R^D to R^dim, defined block by block.

    Args:
        dim: Output dimension (number of buckets), at least 1.
        seed: Sketch seed. Together with ``dim`` and the block names and sizes it determines the
            projection completely.

    Example::

        >>> sketch = CountSketch(dim=4, seed=0)
        >>> a, b = torch.randn(2, 10), torch.randn(2, 3)      # two blocks of 2 vectors
        >>> out = torch.zeros(2, 4)
        >>> sketch.project_into(out, "b.weight", b)           # any order
        >>> sketch.project_into(out, "a.weight", a)
        >>> S = countsketch_matrix(sketch, [("a.weight", 10), ("b.weight", 3)])
        >>> torch.allclose(out, torch.cat([a, b], dim=1) @ S, atol=1e-6)
        True
    """

    def __init__(self, dim: int, seed: int):
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"sketch dim must be an integer >= 1, got {dim!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"sketch seed must be an integer >= 0, got {seed!r}")
        self._dim = dim
        self._seed = seed
        self._cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def dim(self) -> int:
        """The output dimension."""
        return self._dim

    @property
    def seed(self) -> int:
        """The sketch seed."""
        return self._seed

    def __repr__(self) -> str:
        return f"CountSketch(dim={self._dim}, seed={self._seed})"

    def hashes(self, name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw the buckets and signs of block ``name`` of size ``n``, uncached.

        Returns:
            ``(h, s)``: ``h`` int64 buckets in ``[0, dim)`` and ``s`` int64 signs in ``{-1, +1}``,
            both of length ``n``. The buckets are drawn first, then the signs, from
            ``default_rng(SeedSequence([seed, crc32(name)]))``. Changing this order or the
            generator changes every stored sketch: don't.
        """
        if n < 0:
            raise ValueError(f"block size must be >= 0, got {n}")
        rng = np.random.default_rng(np.random.SeedSequence([self._seed, zlib.crc32(name.encode())]))
        h = rng.integers(0, self._dim, size=n, dtype=np.int64)
        s = rng.integers(0, 2, size=n, dtype=np.int64) * 2 - 1
        return h, s

    def _cached(self, name: str, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (name, n)
        if key not in self._cache:
            h, s = self.hashes(name, n)
            self._cache[key] = (torch.from_numpy(h), torch.from_numpy(s).to(torch.float32))
        h, s = self._cache[key]
        if h.device != device:
            h, s = h.to(device), s.to(device)
            self._cache[key] = (h, s)
        return h, s

    def project_into(self, out: torch.Tensor, name: str, x: torch.Tensor) -> None:
        """Add the projection of block ``name`` of ``B`` vectors to ``out``, in place.

        Args:
            out: ``[B, dim]`` float32 accumulator.
            name: The block's name (for a model weight, its parameter name).
            x: ``[B, n]`` values of the block, any float dtype; computed in float32.
        """
        if x.ndim != 2:
            raise ValueError(f"x must be [batch, n], got shape {tuple(x.shape)}")
        if out.shape != (x.shape[0], self._dim) or out.dtype != torch.float32:
            raise ValueError(f"out must be float32 of shape {(x.shape[0], self._dim)}, "
                             f"got {out.dtype} {tuple(out.shape)}")
        h, s = self._cached(name, x.shape[1], x.device)
        out.index_add_(1, h, x.to(torch.float32) * s)

    def project(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Project block ``name`` of ``B`` vectors: ``[B, n] -> [B, dim]`` float32."""
        if x.ndim != 2:
            raise ValueError(f"x must be [batch, n], got shape {tuple(x.shape)}")
        out = torch.zeros(x.shape[0], self._dim, dtype=torch.float32, device=x.device)
        self.project_into(out, name, x)
        return out


def countsketch_matrix(sketch: CountSketch, blocks: list[tuple[str, int]]) -> torch.Tensor:
    """The explicit dense ``[D, dim]`` matrix ``S`` of ``sketch`` over ``blocks`` (tests only).

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
