"""The score block every distillation loss starts from: cosines of pool x query embeddings."""

from __future__ import annotations

from collections.abc import Iterable

from sentence_transformers.util import cos_sim
from torch import Tensor, nn


def block_scores(model: nn.Module, sentence_features: Iterable[dict[str, Tensor]]) -> Tensor:
    """Embed ``[pool_features, query_features]`` and return their cosine matrix ``[P, Q]``.

    The two columns have different lengths (``P`` pool texts, ``Q`` queries), so each gets its
    own forward pass.
    """
    features = list(sentence_features)
    if len(features) != 2:
        raise ValueError(
            f"expected two feature dicts [pool_features, query_features], got {len(features)}"
        )
    pool, query = (model(f)["sentence_embedding"] for f in features)
    return cos_sim(pool, query)


def check_block(pred: Tensor, target: Tensor, two_dims_for: str | None = None) -> Tensor:
    """``target`` as a tensor of ``pred``'s dtype and device, once the shapes are known to match
    (and, for a loss named in ``two_dims_for``, to be ``[n_pool, n_query]`` blocks)."""
    if pred.shape != target.shape:
        raise ValueError(
            f"predicted scores and labels must have the same shape, "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if two_dims_for is not None and pred.ndim != 2:
        raise ValueError(f"{two_dims_for} expects [n_pool, n_query] blocks, got {pred.ndim} dims")
    return target.to(dtype=pred.dtype, device=pred.device)
