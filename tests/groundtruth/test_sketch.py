"""CountSketch against its explicit dense matrix, and the properties the stores rely on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from influcoder.groundtruth.sketch import CountSketch

from ..references import countsketch_matrix, gaussian_projection

BLOCKS = [
    ("model.layers.0.q_proj.weight", 96),
    ("model.layers.0.k_proj.weight", 37),
    ("model.layers.1.q_proj.weight", 128),
]
TOTAL = sum(n for _, n in BLOCKS)


def _split(x: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.split(x, [n for _, n in BLOCKS], dim=1))


def _pairwise_cosines(x: torch.Tensor) -> np.ndarray:
    unit = x / x.norm(dim=1, keepdim=True)
    rows, cols = torch.triu_indices(len(x), len(x), offset=1)
    return (unit @ unit.T)[rows, cols].numpy()


def test_project_equals_dense_matrix():
    sketch = CountSketch(dim=16, seed=3)
    x = torch.randn(4, TOTAL, generator=torch.Generator().manual_seed(0))
    matrix = countsketch_matrix(sketch, BLOCKS)
    assert matrix.shape == (TOTAL, 16)
    projected = sum(sketch.project(name, part) for (name, _), part in zip(BLOCKS, _split(x)))
    assert projected.dtype == torch.float32 and projected.shape == (4, 16)
    torch.testing.assert_close(projected, x @ matrix, atol=1e-5, rtol=0)


def test_blockwise_in_any_order_equals_concatenated():
    sketch = CountSketch(dim=32, seed=0)
    x = torch.randn(3, TOTAL, generator=torch.Generator().manual_seed(1))
    forward = torch.zeros(3, 32)
    backward = torch.zeros(3, 32)
    for (name, _), part in zip(BLOCKS, _split(x)):
        sketch.project_into(forward, name, part)
    for (name, _), part in reversed(list(zip(BLOCKS, _split(x)))):
        sketch.project_into(backward, name, part)
    torch.testing.assert_close(forward, backward, atol=1e-6, rtol=0)
    torch.testing.assert_close(forward, x @ countsketch_matrix(sketch, BLOCKS), atol=1e-5, rtol=0)


def test_same_seed_same_result_different_seed_different():
    x = torch.randn(2, 500, generator=torch.Generator().manual_seed(2))
    first = CountSketch(64, seed=7).project("w", x)
    again = CountSketch(64, seed=7).project("w", x)
    other_seed = CountSketch(64, seed=8).project("w", x)
    other_name = CountSketch(64, seed=7).project("v", x)
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    assert not torch.allclose(first, other_seed)
    assert not torch.allclose(first, other_name)


def test_hashes_in_range_and_signs_plus_minus_one():
    sketch = CountSketch(dim=10, seed=0)
    h, s = sketch.hashes("block", 5000)
    assert h.dtype == np.int64 and h.min() >= 0 and h.max() < 10
    assert set(np.unique(h)) == set(range(10))
    assert set(np.unique(s)) == {-1, 1}
    # Every row of the dense matrix holds exactly one +-1.
    matrix = countsketch_matrix(sketch, [("block", 5000)])
    assert torch.equal((matrix != 0).sum(dim=1), torch.ones(5000, dtype=torch.long))
    assert set(matrix[matrix != 0].unique().tolist()) == {-1.0, 1.0}


def test_hashes_are_frozen():
    """Stored sketches stay valid only if the hash draw never changes: pin a few values."""
    h, s = CountSketch(dim=16, seed=0).hashes("layer.weight", 8)
    assert h.tolist() == [3, 2, 11, 7, 11, 3, 7, 4]
    assert s.tolist() == [1, 1, -1, -1, -1, 1, 1, 1]


def test_cosines_preserved_at_4096():
    generator = torch.Generator().manual_seed(0)
    n, dim_in, rank = 40, 20000, 5
    # Low-rank structure plus noise: pairwise cosines spread over about [-0.8, 0.8].
    x = torch.randn(n, rank, generator=generator) @ torch.randn(
        rank, dim_in, generator=generator
    ) + torch.randn(n, dim_in, generator=generator)
    exact = _pairwise_cosines(x)
    assert exact.std() > 0.2
    sketched = _pairwise_cosines(CountSketch(4096, seed=0).project("x", x))
    assert spearmanr(exact, sketched).statistic >= 0.97
    assert np.abs(exact - sketched).max() < 0.1


def test_gaussian_projection_is_seeded_and_preserves_norms_on_average():
    x = torch.randn(200, 300, generator=torch.Generator().manual_seed(4))
    y = gaussian_projection(x, 256, seed=0)
    torch.testing.assert_close(y, gaussian_projection(x, 256, seed=0), atol=0, rtol=0)
    assert not torch.allclose(y, gaussian_projection(x, 256, seed=1))
    ratio = (y.norm(dim=1) ** 2 / x.norm(dim=1) ** 2).mean().item()
    assert abs(ratio - 1) < 0.05


def test_validation():
    with pytest.raises(ValueError, match="dim"):
        CountSketch(0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        CountSketch(8, seed=-1)
    sketch = CountSketch(8, seed=0)
    with pytest.raises(ValueError, match="batch"):
        sketch.project("w", torch.randn(10))
    with pytest.raises(ValueError, match="out"):
        sketch.project_into(torch.zeros(2, 4), "w", torch.randn(2, 10))
    with pytest.raises(ValueError, match="dim"):
        gaussian_projection(torch.randn(2, 10), 0, seed=0)
