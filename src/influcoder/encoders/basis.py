"""An encoder's gradient basis: the principal directions of the ground-truth gradients that
its head predicts coordinates on, saved beside the head by ``distill``.

A distilled encoder with a head maps a text to its predicted coordinates ``z = g V^T`` on the
top ``k`` uncentred principal directions ``V`` of the gradients it was fitted on
(:mod:`influcoder.distillation.linear`). With ``V`` saved, a query's *own* gradient (one
backward pass, taken as the ground truth was) can be put in the same space and compared with
the encoder's embeddings of the indexed pool: query gradients, pool embeddings
(``attribute --query-gradients``, ``lds --query-gradients``). On the demo the encoder loses
its LDS against the gradient almost wholly on the query side (``benchmarks/lds_gap.py``).

File: ``influcoder_gradient_basis.safetensors`` in the encoder's directory, the tensor
``directions [k, dim]`` (float32, orthonormal rows) and, as metadata (one JSON string under
``influcoder``), the format, its version and the ground truth's setup that query gradients
must share. Plain sentence-transformers ignores the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from influcoder.errors import InflucoderError
from influcoder.similarity import normalize_rows, unit_rows

BASIS_NAME = "influcoder_gradient_basis.safetensors"
_FORMAT = "influcoder-gradient-basis"


@dataclass(frozen=True)
class GradientBasis:
    """``directions [k, dim]`` and the gradient store ``setup`` they were computed from."""

    directions: np.ndarray
    setup: dict

    def coordinates(self, gradients) -> np.ndarray:
        """``[n, k]`` coordinates of the L2-normalised ``gradients [n, dim]``: what the
        head was fitted to predict."""
        g = np.asarray(gradients, dtype=np.float64)
        if g.ndim != 2 or g.shape[1] != self.directions.shape[1]:
            raise InflucoderError(
                f"gradients of {g.shape[-1]} dimensions do not fit the encoder's gradient "
                f"basis of {self.directions.shape[1]}"
            )
        return unit_rows(g) @ self.directions.T.astype(np.float64)

    def query_vectors(self, gradients, similarity: str) -> np.ndarray:
        """Query gradients as the encoder's pool embeddings are compared with them: their
        :meth:`coordinates`, as unit rows unless the encoder compares by ``dot`` (float32)."""
        z = self.coordinates(gradients)
        return z.astype(np.float32) if similarity == "dot" else normalize_rows(z)


def save_basis(folder: str | os.PathLike, directions, setup: dict) -> Path:
    """Write ``directions`` and ``setup`` into the encoder directory ``folder`` (inside the
    temporary folder an encoder is saved through, so the two appear together)."""
    from safetensors.numpy import save_file

    path = Path(folder) / BASIS_NAME
    save_file(
        {"directions": np.ascontiguousarray(directions, dtype=np.float32)},
        str(path),
        # one key: safetensors writes a metadata map in no fixed order, and a rerun must give
        # the same bytes
        metadata={
            "influcoder": json.dumps(
                {"format": _FORMAT, "version": 1, "setup": setup}, sort_keys=True
            )
        },
    )
    return path


def has_basis(folder: str | os.PathLike) -> bool:
    return (Path(folder) / BASIS_NAME).is_file()


def load_basis(folder: str | os.PathLike, option: str = "--query-gradients") -> GradientBasis:
    """The gradient basis of the encoder in ``folder``; an error naming ``option`` when the
    encoder has none (no head, or distilled before the basis was saved)."""
    from safetensors import safe_open

    path = Path(folder) / BASIS_NAME
    if not path.is_file():
        raise InflucoderError(
            f"{option}: the encoder {folder} has no gradient basis ({BASIS_NAME}); only an "
            "encoder distilled with a head (influcoder distill, --head linear|kernel|auto) "
            "by this version or later has one"
        )
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {}).get("influcoder", "{}"))
            directions = f.get_tensor("directions")
        if meta.get("format") != _FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        setup = meta["setup"]
    except Exception as e:  # a damaged or foreign file: say which
        raise InflucoderError(f"{path}: not a readable gradient basis ({e})") from None
    if directions.ndim != 2 or not np.isfinite(directions).all():
        raise InflucoderError(f"{path}: tensor 'directions' must be a finite 2-D array")
    return GradientBasis(directions, setup)
