"""A multi-view encoder's head, applied in numpy: a linear map or a kernel (RBF) map.

``distill`` fits the head (:mod:`influcoder.distillation.linear`, :mod:`influcoder.distillation.kernel`);
this module owns what is saved and how it is applied, so that every backend that runs the
backbone (torch, ONNX, int8, the torch-free query encoder) applies the same function:

- ``linear``: ``x @ weight.T + bias``; tensors ``weight [out, in]``, ``bias [out]``.
- ``kernel``: ``k(x, anchors) @ coef + bias`` with ``k(a, b) = exp(-gamma ||a - b||^2)``; tensors
  ``anchors [n, in]`` (the training samples' features), ``coef [n, out]``, ``bias [out]``; the
  scalar ``gamma`` lives in the views file. Kernel ridge over the anchors: a smooth nonlinear
  map where the linear one under-fits (measured in ``docs/DISTILLATION.md``, "A kernel head").
  Directories written before the kinds were named ``linear|kernel`` say ``rbf``; they load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from influcoder.errors import InflucoderError

HEAD_KINDS = ("linear", "kernel")
#: Former names of the kinds, still read from older views files.
FORMER_HEAD_KINDS = {"rbf": "kernel"}
_TENSORS = {"linear": ("weight", "bias"), "kernel": ("anchors", "coef", "bias")}
_BLAS = []  # the threadpoolctl controller, made on first use


def one_blas_thread():
    """A context in which numpy's BLAS runs on one thread.

    The head's products are small, but once they wake OpenBLAS's worker threads, those keep
    spinning for a while and slow the encoder's next forward pass on the same cores: a
    demo-sized multi-view encoder measured 10-35% slower than its backbone alone for that
    reason alone, and as fast with one BLAS thread (``benchmarks/view_overhead.py``).
    """
    if not _BLAS:
        from threadpoolctl import ThreadpoolController

        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` squared Euclidean distances ``||a_i - b_j||^2`` in float64,
    round-off below 0 clipped."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.clip(sq, 0.0, None)


def rbf_kernel(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    """``[len(a), len(b)]`` values ``exp(-gamma * ||a_i - b_j||^2)``, computed in float64."""
    return np.exp(-gamma * squared_distances(a, b))


@dataclass
class SavedHead:
    """A saved head: ``kind`` (:data:`HEAD_KINDS`), its float32 ``tensors`` and, for ``kernel``,
    ``gamma``. Calling it maps ``[n, in_dim]`` features to ``[n, out_dim]`` float32 outputs."""

    kind: str
    tensors: dict[str, np.ndarray]
    gamma: float | None = None

    def __post_init__(self):
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"head kind must be one of {HEAD_KINDS}, got {self.kind!r}")
        self.tensors = {
            k: np.ascontiguousarray(self.tensors[k], dtype=np.float32) for k in _TENSORS[self.kind]
        }

    @property
    def in_dim(self) -> int:
        t = self.tensors
        return int(t["weight"].shape[1] if self.kind == "linear" else t["anchors"].shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.tensors["bias"].shape[0])

    def __call__(self, x) -> np.ndarray:
        t = self.tensors
        with one_blas_thread():
            if self.kind == "linear":
                out = np.asarray(x, dtype=np.float32) @ t["weight"].T + t["bias"]
            else:
                out = (
                    rbf_kernel(x, t["anchors"], self.gamma) @ t["coef"].astype(np.float64)
                    + t["bias"]
                )
        return out.astype(np.float32)

    def shapes_error(self) -> str | None:
        """Why the tensors do not fit together, or None."""
        t, out = self.tensors, self.out_dim
        if self.kind == "linear":
            ok = t["weight"].ndim == 2 and t["bias"].shape == (t["weight"].shape[0],)
        else:
            ok = (
                t["anchors"].ndim == 2
                and t["coef"].ndim == 2
                and t["coef"].shape == (t["anchors"].shape[0], out)
            )
            if not (isinstance(self.gamma, float) and self.gamma > 0):
                return f"gamma must be a positive number, got {self.gamma!r}"
        shapes = {k: tuple(v.shape) for k, v in t.items()}
        return None if ok else f"tensors {shapes} do not fit together"


def save_head(head: SavedHead, head_file: Path) -> dict:
    """Write ``head``'s tensors to ``head_file`` (safetensors); returns the fields the views
    file records about it."""
    from safetensors.numpy import save_file

    save_file(dict(head.tensors), str(head_file))
    return {} if head.kind == "linear" else {"head_kind": head.kind, "gamma": head.gamma}


def read_head(spec: dict, spec_file: Path, head_file: Path) -> SavedHead:
    """The head a views file (``spec``, read from ``spec_file``) names; an
    :class:`InflucoderError` naming the file and the field when it is not valid."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    kind = spec.get("head_kind", "linear")
    kind = FORMER_HEAD_KINDS.get(kind, kind) if isinstance(kind, str) else kind
    if kind not in HEAD_KINDS:
        raise InflucoderError(
            f"{spec_file}: field 'head_kind' must be one of {HEAD_KINDS}, got {kind!r}"
        )
    gamma = spec.get("gamma")
    if kind == "kernel" and (
        isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0
    ):
        raise InflucoderError(
            f"{spec_file}: field 'gamma' must be a positive number for an "
            f"kernel head, got {gamma!r}"
        )
    names = _TENSORS[kind]
    try:
        tensors = load_file(str(head_file))
        head = SavedHead(
            kind, {k: tensors[k] for k in names}, float(gamma) if kind == "kernel" else None
        )
    except (OSError, KeyError, ValueError, SafetensorError) as e:
        raise InflucoderError(
            f"{head_file}: no float tensors {', '.join(map(repr, names))} for "
            f"a {kind} head ({type(e).__name__}: {e})"
        ) from None
    error = head.shapes_error()
    if error:
        raise InflucoderError(f"{head_file}: {error}")
    return head
