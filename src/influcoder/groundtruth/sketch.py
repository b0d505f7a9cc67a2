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
  concatenated vector. That is what lets :mod:`influcoder.groundtruth.gradients` project each
  module's per-sample gradients inside a backward hook and throw them away: the full gradient
  is never materialised.
* **Reproducible from the manifest.** The block seed is
  ``SeedSequence([seed, crc32(name)])`` fed to NumPy's ``default_rng`` (PCG64), which does not
  depend on Python's per-process string hashing, the platform or the torch version. A store that
  records ``(dim, seed)`` and the block names can be extended or queried years later.
* **Memory.** The hashes of a block are cached (``int64`` buckets plus ``float32`` signs, 12 bytes
  per coordinate) so repeated batches don't redraw them. For a full-model sketch of a 135M model
  that cache is about 1.6 GB; LoRA sketches need a few tens of MB.

Its explicit dense matrix (the obviously correct reference the tests compare with) and a dense
JL projection live in ``tests/references.py``: they are never used by the library.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

__all__ = ["CountSketch"]


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
        >>> ha, sa = sketch.hashes("a.weight", 10)             # bucket and sign per coordinate
        >>> expected = torch.zeros(2, 4)
        >>> _ = expected.index_add_(1, torch.from_numpy(ha), a * torch.from_numpy(sa))
        >>> hb, sb = sketch.hashes("b.weight", 3)
        >>> _ = expected.index_add_(1, torch.from_numpy(hb), b * torch.from_numpy(sb))
        >>> torch.allclose(out, expected, atol=1e-6)
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
            raise ValueError(
                f"out must be float32 of shape {(x.shape[0], self._dim)}, "
                f"got {out.dtype} {tuple(out.shape)}"
            )
        h, s = self._cached(name, x.shape[1], x.device)
        out.index_add_(1, h, x.to(torch.float32) * s)

    def project(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Project block ``name`` of ``B`` vectors: ``[B, n] -> [B, dim]`` float32."""
        if x.ndim != 2:
            raise ValueError(f"x must be [batch, n], got shape {tuple(x.shape)}")
        out = torch.zeros(x.shape[0], self._dim, dtype=torch.float32, device=x.device)
        self.project_into(out, name, x)
        return out
