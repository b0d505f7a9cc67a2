"""An encoder directory's learned pooler: the attention over a set's members that
``distill-runs --pooling attention`` trains, its math and reading it back.

A set ``S`` of pool samples is pooled into one vector ``|S| * sum_{z in S} a_z E(z)`` with
``a = softmax_{z in S}(<w, E(z)> / T)``: one learned vector ``w`` and a temperature ``T``.
:func:`attention_pool` is the one implementation: training
(:class:`~influcoder.distillation.pooling.AttentionPooling`) and the ``learned`` group aggregate
(:mod:`influcoder.attribution.groups`, a group as the set) both call it.

``w`` is stored as JSON in the directory's ``influcoder_runs.json`` (field ``pooling``:
``{"kind": "attention", "temperature": T, "weight": [...]}``, float32 values written exactly);
:func:`read_pooler` reads it back, and the encoder's fingerprint covers the file, so an index
built with the encoder is tied to its pooler too. A ``sum`` pooling has no parameters: no pooler.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from influcoder.errors import InputError

#: The card ``distill-runs`` writes into the encoder directory; its ``pooling`` field holds
#: the pooler.
RUNS_CARD = "influcoder_runs.json"
#: The pooling kind that has learned parameters.
LEARNED_KIND = "attention"


def attention_weights(logits, members):
    """``[R, n]`` torch weights: each set's softmax of ``logits`` (``[n]``) over its members
    (``members``: ``[R, n]``, 0/1), 0 elsewhere."""
    import torch

    mask = members.bool()
    masked = logits.expand(mask.shape[0], -1).masked_fill(~mask, float("-inf"))
    return torch.softmax(masked, dim=1)


def attention_logits(pool, weight, temperature: float):
    """``[n]`` torch logits ``<w, E(z)> / T`` of the ``pool`` rows (``[n, d]``)."""
    return (pool @ weight.to(pool.dtype)) / temperature


def attention_pool(members, pool, weight, temperature: float):
    """``[R, d]`` torch pooled vectors ``|S| * sum_{z in S} softmax_S(<w, E(z)> / T) E(z)`` of
    the sets ``members`` (``[R, n]``, 0/1) over ``pool`` (``[n, d]``), ``weight`` ``w``
    (``[d]``), temperature ``T``; differentiable in ``pool`` and ``weight``."""
    logits = attention_logits(pool, weight, temperature)
    sizes = members.sum(dim=1, keepdim=True).to(pool.dtype)
    return sizes * (attention_weights(logits, members) @ pool)


@dataclass(frozen=True)
class LearnedPooler:
    """A trained attention pooler: ``weight`` ``w`` (``[d]`` float32), ``temperature`` ``T``,
    and the file it was read from."""

    weight: np.ndarray
    temperature: float
    path: Path

    def pool(self, members: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """:func:`attention_pool` of the sets ``members`` over ``pool`` (numpy in and out)."""
        import torch

        with torch.no_grad():
            out = attention_pool(
                torch.from_numpy(np.asarray(members, dtype=np.float64)),
                torch.from_numpy(np.asarray(pool, dtype=np.float64)),
                torch.from_numpy(self.weight.astype(np.float64)),
                self.temperature,
            )
        return out.numpy()

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        """``[n]`` float64 :func:`attention_logits` of ``vectors`` (``[n, d]``)."""
        import torch

        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != len(self.weight):
            raise InputError(
                f"the pooler's weight has {len(self.weight)} dimensions, the embeddings "
                f"{vectors.shape[-1]}; it belongs to another encoder",
                path=str(self.path),
                field="pooling.weight",
            )
        with torch.no_grad():
            return attention_logits(
                torch.from_numpy(vectors.astype(np.float64)),
                torch.from_numpy(self.weight.astype(np.float64)),
                self.temperature,
            ).numpy()

    def member_weights(self, logits: np.ndarray, codes: np.ndarray, n_sets: int) -> np.ndarray:
        """``[n]`` float64: sample ``i``'s weight in its set ``codes[i]`` (a partition of the
        samples whose :meth:`logits` are ``logits``), ``|S| * a_i``, so that a set's pooled
        vector is ``sum_{i in S} weight_i E(z_i)`` and a query's score for it
        ``sum_{i in S} weight_i <E(x), E(z_i)>``: :func:`attention_pool`'s size and softmax,
        set by set (each set alone, so a partition costs ``O(n)``)."""
        import torch

        logits = torch.from_numpy(np.asarray(logits, dtype=np.float64))
        out = np.zeros(len(logits))
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(n_sets + 1))
        with torch.no_grad():
            for s in range(n_sets):
                rows = order[bounds[s] : bounds[s + 1]]
                if len(rows):
                    one = torch.ones(1, len(rows), dtype=torch.bool)
                    a = attention_weights(logits[torch.from_numpy(rows)], one)
                    out[rows] = len(rows) * a[0].numpy()
        return out


def read_pooler(encoder_dir: str | os.PathLike) -> LearnedPooler | None:
    """The learned pooler of an encoder directory, or None when it has none (no
    ``influcoder_runs.json``, or a ``sum`` pooling).

    Raises:
        InputError: naming the file and field, when the card is not JSON or its pooler is
            malformed.
    """
    path = Path(encoder_dir) / RUNS_CARD
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"not a JSON file ({e})", path=str(path)) from None
    pooling = card.get("pooling") if isinstance(card, dict) else None
    if not isinstance(pooling, dict) or pooling.get("kind") != LEARNED_KIND:
        return None
    weight, temperature = pooling.get("weight"), pooling.get("temperature", 1.0)
    if (
        not isinstance(weight, list)
        or not weight
        or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in weight)
    ):
        raise InputError(
            "must be a non-empty list of finite numbers", path=str(path), field="pooling.weight"
        )
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise InputError(
            f"must be a number > 0, got {temperature!r}",
            path=str(path),
            field="pooling.temperature",
        )
    return LearnedPooler(np.asarray(weight, dtype=np.float32), float(temperature), path)


def require_pooler(encoder_dir: str | os.PathLike | None, option: str) -> LearnedPooler:
    """:func:`read_pooler`, refusing (InputError naming ``option`` and the folder) an encoder
    without a learned pooler."""
    pooler = None if encoder_dir is None else read_pooler(encoder_dir)
    if pooler is None:
        raise InputError(
            f"{option}: the encoder {encoder_dir} carries no learned pooler (no "
            f"{RUNS_CARD} with an attention pooling); train one with influcoder "
            f"distill-runs --pooling attention, or choose another aggregate"
        )
    return pooler
