"""How vectors are compared: rows scaled to unit length, cosine matrices, whether a store's
vectors are compared by cosine or as stored (dot product), and the similarity a score of two
gradient stores asks for (cosine, or the inner product of the unnormalised gradients). Pure
numpy; the floor every stage builds on.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

#: How two gradient stores' rows are compared: ``cosine`` (the unit rows as stored) or
#: ``inner`` (the inner product of the gradients before normalisation: each unit row scaled
#: back by its stored norm, :meth:`influcoder.io.stores.Store.norms`).
Similarity = Literal["cosine", "inner"]
SIMILARITIES: tuple[str, ...] = get_args(Similarity)


def check_similarity(similarity: str) -> str:
    """``similarity`` if it is one of :data:`SIMILARITIES`, else ``ValueError``."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    return similarity


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to length 1, in float32 (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, in float64 (the ground truth's own normalisation)."""
    return normalize_rows(x).astype(np.float64)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` cosines of the rows of ``a`` and ``b``."""
    return unit_rows(a) @ unit_rows(b).T


def compares_by_dot(setup: dict) -> bool:
    """Whether a store of this ``setup`` holds vectors compared as stored, by dot product: the
    embeddings of an encoder that compares by dot product, whose setup says
    ``"normalized": false`` (:mod:`influcoder.attribution.encode`). Every other store is
    compared by cosine."""
    return setup.get("normalized") is False


def compared_rows(store, x: np.ndarray) -> np.ndarray:
    """Rows of ``store`` (anything with a ``setup`` dict) as its vectors are compared, in
    float32: unit length, or as stored for a store that compares by dot product
    (:func:`compares_by_dot`)."""
    if compares_by_dot(store.setup):
        return np.asarray(x, dtype=np.float32)
    return normalize_rows(x)


def scored_rows(
    store, start: int, x: np.ndarray, similarity: str = "cosine", norms: np.ndarray | None = None
) -> np.ndarray:
    """Rows ``[start, start + len(x))`` of ``store`` as ``similarity`` compares them, float32:
    :func:`compared_rows` for ``cosine``; for ``inner``, unit rows times their norms before
    normalisation (``norms``: the whole store's, else read from it)."""
    rows = compared_rows(store, x)
    if check_similarity(similarity) == "inner":
        norms = store.norms() if norms is None else norms
        rows = normalize_rows(x) * norms[start : start + len(x), None]
    return rows
