"""Set pooling: one query's score for a whole subset of the pool, from member embeddings.

A retraining run trains on a subset ``S`` of the pool; learning from runs
(:mod:`influcoder.distillation.runs`) needs a score ``s(x, S)`` for a query ``x`` and a
subset, computed from the encoder's embeddings ``E(x)`` and ``E(z)``, ``z in S``. Each pooling
maps a batch of subsets, given as a membership matrix ``[R, n_pool]`` over the pool's
embeddings ``[n_pool, d]``, to scores ``[R, Q]`` against queries ``[Q, d]``:

* ``sum``: ``<E(x), sum_{z in S} E(z)>``, the linear datamodel that LDS scores (its
  prediction for a subset is the sum of the members' scores). No parameters: the baseline.
* ``attention``: ``<E(x), |S| * sum_{z in S} a_z E(z)>`` with ``a = softmax_{z in S}(<w, E(z)>)``,
  a learned, query-independent attention over the members (one vector ``w``, started at 0,
  where it equals ``sum`` exactly). Scaling by ``|S|`` keeps sets of different sizes on the
  sum's scale. AirRep's paper calls its pooler attention-based; its released code weights
  the members by ``softmax(|<E(x), E(z)>|)``, query-dependent and without parameters, which
  is influcoder's ``softmax`` group aggregate; the learned vector here is what the ``learned``
  group aggregate applies to a group (the math is :mod:`influcoder.encoders.pooler`'s, shared).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from influcoder.encoders.pooler import attention_logits, attention_pool, attention_weights

POOLINGS = ("sum", "attention")


def _check(members: Tensor, pool: Tensor, queries: Tensor) -> None:
    if members.ndim != 2 or members.shape[1] != pool.shape[0]:
        raise ValueError(
            f"members must be [subsets, n_pool] = [R, {pool.shape[0]}], got {tuple(members.shape)}"
        )
    if pool.ndim != 2 or queries.ndim != 2 or pool.shape[1] != queries.shape[1]:
        raise ValueError(
            f"pool and queries must be [n, d] of one d, got {tuple(pool.shape)} and "
            f"{tuple(queries.shape)}"
        )
    if bool((members.sum(dim=1) == 0).any()):
        raise ValueError("every subset needs at least one member")


class SumPooling(nn.Module):
    """``s(x, S) = <E(x), sum_{z in S} E(z)>`` (module docstring); no parameters."""

    kind = "sum"

    def forward(self, members: Tensor, pool: Tensor, queries: Tensor) -> Tensor:
        """Scores ``[R, Q]`` of the subsets ``members`` (``[R, n_pool]``, 0/1) given the
        pool's embeddings ``[n_pool, d]`` and the queries' ``[Q, d]``."""
        _check(members, pool, queries)
        return (members.to(pool.dtype) @ pool) @ queries.T

    def config(self) -> dict:
        return {"kind": self.kind}


class AttentionPooling(nn.Module):
    """``s(x, S) = <E(x), |S| * sum_{z in S} softmax_S(<w, E(z)>) E(z)>`` (module
    docstring). ``w`` starts at 0: uniform attention, the same scores as :class:`SumPooling`.

    Args:
        dim: the embeddings' dimension.
        temperature: divides ``<w, E(z)>`` before the softmax.
    """

    kind = "attention"

    def __init__(self, dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        if dim < 1 or not temperature > 0:
            raise ValueError(f"dim must be >= 1 and temperature > 0, got {dim} and {temperature}")
        self.weight = nn.Parameter(torch.zeros(dim))
        self.temperature = float(temperature)

    def attention(self, members: Tensor, pool: Tensor) -> Tensor:
        """``[R, n_pool]`` weights: each subset's softmax over its members (0 elsewhere)."""
        return attention_weights(attention_logits(pool, self.weight, self.temperature), members)

    def forward(self, members: Tensor, pool: Tensor, queries: Tensor) -> Tensor:
        _check(members, pool, queries)
        return attention_pool(members, pool, self.weight, self.temperature) @ queries.T

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "temperature": self.temperature,
            "weight": [float(v) for v in self.weight.detach().cpu()],
        }


def make_pooling(kind: str, dim: int) -> nn.Module:
    """A fresh pooling of ``kind`` (``sum`` or ``attention``) for ``dim``-dim embeddings."""
    if kind == "sum":
        return SumPooling()
    if kind == "attention":
        return AttentionPooling(dim)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {kind!r}")
