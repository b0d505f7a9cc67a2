"""Group attribution: influence per group of pool samples (``attribute --group-by FIELD``, a
metadata field such as a data source or a file), answering "which source taught this".

A group's scores for a query are the scores of *every* pool sample in it (not only those in
the top k). For a group's scores ``s_1 .. s_m``:

* ``mean``, ``sum``, ``max``: of the ``s_i``. ``sum`` grows with the group's size (a big
  source wins by volume), ``mean`` is diluted by it, ``max`` sees one sample only.
* ``softmax``: AirRep's group influence, ``sum_i w_i * s_i`` with ``w = softmax(|s| / T)``
  over the group: a mean weighted towards the group's strongest samples, between ``mean``
  (``T`` large) and the score of largest magnitude (``T`` small). AirRep (Sun et al. 2025,
  "Enhancing Training Data Attribution with Representational Optimization",
  arXiv:2505.18513) introduces this attention-weighted pooling for group influence; its
  released code (``AirRep.similarity(softmax=True)``, ``airrep/modeling_airrep.py`` in
  github.com/sunnweiwei/AirRep) computes exactly ``(softmax(|scores|) * scores).sum()``,
  that is ``T = 1``, on dot products of its own embeddings, which it does not normalise.
  Our scores are cosines in [-1, 1], where at ``T = 1`` two samples' weights differ at most
  e^2 = 7.4 times and the result is close to the mean; the default ``T`` (0.1, see
  :data:`~influcoder.attribution.settings.DEFAULT_GROUP_TEMPERATURE`) lets a group's
  strongest samples dominate. ``T = 1`` reproduces AirRep's formula.
* ``learned``: only with an encoder that carries a learned pooler (``distill-runs --pooling
  attention``, :mod:`influcoder.encoders.pooler`): the score of the group's pooled vector,
  ``<E(x), |G| * sum_i a_i E(z_i)>`` with ``a = softmax_G(<w, E(z_i)> / T_w)``, the pooling the
  encoder was trained with on retraining runs, with the group as the set. The weights do not
  depend on the query, so it is ``sum_i |G| a_i s_i``: on the sum's scale, a sum that leans
  towards the members the pooler learned to count.

Samples whose field is absent, null or empty form the group ``(missing)``
(:data:`~influcoder.attribution.settings.MISSING_GROUP`). Values are compared as text (lists
and objects as JSON). Groups are listed by ``softmax``, highest first, unless another aggregate
is asked for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from influcoder.attribution.index import Index
from influcoder.attribution.settings import (
    DEFAULT_GROUP_AGGREGATE,
    DEFAULT_GROUP_TEMPERATURE,
    GROUP_AGGREGATES,
    GROUP_STATS,
    LEARNED_AGGREGATE,
    MISSING_GROUP,
)
from influcoder.encoders.pooler import LearnedPooler
from influcoder.errors import InputError
from influcoder.io.samples import Sample

#: Scores held at once (queries x pool samples) while grouping: queries go in batches.
_BATCH_CELLS = 1 << 23


def meta_key(value) -> str:
    """A metadata value as text (JSON for anything but a string): what groups and the
    server's filters compare."""
    return (
        value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    )


@dataclass(frozen=True)
class PoolGroups:
    """The pool split by one metadata field: ``names[codes[i]]`` is sample ``i``'s group."""

    field: str
    names: list[str]
    codes: np.ndarray
    n_missing: int

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.codes, minlength=len(self.names))


def pool_groups(samples: Sequence[Sample], field: str) -> PoolGroups:
    """Group pool samples by the metadata ``field``; an error naming the fields there are if
    no sample has it."""
    names: dict[str, int] = {}
    codes = np.empty(len(samples), dtype=np.int64)
    fields: set[str] = set()
    n_missing = 0
    for i, s in enumerate(samples):
        fields.update(s.meta)
        value = s.meta.get(field)
        if value is None or value == "":
            key, n_missing = MISSING_GROUP, n_missing + 1
        else:
            key = meta_key(value)
        codes[i] = names.setdefault(key, len(names))
    if n_missing == len(samples):
        raise InputError(
            f"no pool sample has the metadata field '{field}' (the pool's fields: "
            f"{', '.join(sorted(fields)) or 'none'})"
        )
    return PoolGroups(field, list(names), codes, n_missing)


def group_stats(
    scores: np.ndarray,
    codes: np.ndarray,
    n_groups: int,
    *,
    temperature: float = DEFAULT_GROUP_TEMPERATURE,
    learned: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """:data:`GROUP_STATS` of ``scores`` (``n_query x n`` or ``n``) per group: each
    ``n_query x n_groups`` (or ``n_groups``), float64; a group without samples gets NaN.
    ``learned``: the samples' learned-pooler weights (:func:`learned_weights`); adds
    ``learned``, the weighted sum of each group's scores."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    s = np.asarray(scores, dtype=np.float64)
    one = s.ndim == 1
    s = np.atleast_2d(s)
    if s.shape[1] != len(codes):
        raise ValueError(f"{s.shape[1]} scores per query, {len(codes)} group codes")
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    present = sorted_codes[starts]
    sizes = np.diff(np.r_[starts, len(codes)])
    s = s[:, order]
    total = np.add.reduceat(s, starts, axis=1)
    top = np.maximum.reduceat(s, starts, axis=1)
    a = np.abs(s) / temperature
    w = np.exp(a - np.repeat(np.maximum.reduceat(a, starts, axis=1), sizes, axis=1))
    soft = np.add.reduceat(w * s, starts, axis=1) / np.add.reduceat(w, starts, axis=1)
    found = [("mean", total / sizes), ("sum", total), ("max", top), ("softmax", soft)]
    if learned is not None:
        pooled = np.add.reduceat(np.asarray(learned, dtype=np.float64)[order] * s, starts, axis=1)
        found.append((LEARNED_AGGREGATE, pooled))
    out = {}
    for name, values in found:
        full = np.full((len(s), n_groups), np.nan)
        full[:, present] = values
        out[name] = full[0] if one else full
    return out


@dataclass(frozen=True)
class GroupAttribution:
    """Group statistics for each of some queries (or one aggregate score per sample):
    ``stats[name]`` is ``n_query x n_groups``."""

    groups: PoolGroups
    temperature: float
    stats: dict[str, np.ndarray]
    #: the statistic the groups are listed by
    aggregate: str = DEFAULT_GROUP_AGGREGATE

    @property
    def names(self) -> list[str]:
        """The statistics held, in :data:`GROUP_AGGREGATES` order."""
        return [name for name in GROUP_AGGREGATES if name in self.stats]

    def table(self, j: int = 0) -> list[dict]:
        """Query ``j``'s groups, highest :attr:`aggregate` first (ties: larger group first)."""
        sizes = self.groups.sizes
        key = self.stats[self.aggregate][j]
        order = np.lexsort((np.arange(len(sizes)), -sizes, -key))
        return [
            {
                "group": self.groups.names[g],
                "n": int(sizes[g]),
                **{name: float(self.stats[name][j, g]) for name in self.names},
            }
            for g in order
            if sizes[g] > 0
        ]


def index_samples(index: Index) -> list[Sample]:
    """Every pool sample of ``index``, in row order."""
    return [s for seg in index.segments for s in seg.samples]


def learned_weights(index: Index, groups: PoolGroups, pooler: LearnedPooler) -> np.ndarray:
    """``[n]``: each pool sample's weight in its group under ``pooler``
    (:meth:`~influcoder.encoders.pooler.LearnedPooler.member_weights`), from the index's
    vectors, one pass over them."""
    logits = np.empty(index.n)
    for start, chunk in index.iter_chunks():
        logits[start : start + len(chunk)] = pooler.logits(chunk)
    return pooler.member_weights(logits, groups.codes, len(groups.names))


def check_aggregate(aggregate: str, pooler: LearnedPooler | None, option: str) -> None:
    """Refuse an unknown aggregate, or ``learned`` without a pooler (InputError naming
    ``option``)."""
    if aggregate not in GROUP_AGGREGATES:
        raise InputError(f"{option} must be one of {list(GROUP_AGGREGATES)}, got {aggregate!r}")
    if aggregate == LEARNED_AGGREGATE and pooler is None:
        raise InputError(f"{option} {LEARNED_AGGREGATE}: the encoder carries no learned pooler")


def _groups_and_weights(index: Index, field: str, pooler, aggregate: str):
    """The pool's groups by ``field`` and, with ``pooler``, each sample's learned weight;
    ``aggregate`` checked first."""
    groups = pool_groups(index_samples(index), field)
    check_aggregate(aggregate, pooler, "aggregate")
    return groups, None if pooler is None else learned_weights(index, groups, pooler)


def group_attribution(
    index: Index,
    q: np.ndarray,
    field: str,
    *,
    temperature: float = DEFAULT_GROUP_TEMPERATURE,
    pooler: LearnedPooler | None = None,
    aggregate: str = DEFAULT_GROUP_AGGREGATE,
) -> GroupAttribution:
    """Per-group statistics of unit query vectors ``q`` (``n_query x dim``) against every
    pool vector of ``index`` (exact; one pass over the pool's vectors per batch of queries);
    with ``pooler``, ``learned`` too; listed by ``aggregate``."""
    groups, learned = _groups_and_weights(index, field, pooler, aggregate)
    q = np.atleast_2d(np.asarray(q, dtype=np.float32))
    n, n_groups = index.n, len(groups.names)
    names = GROUP_STATS if learned is None else GROUP_AGGREGATES
    stats = {name: np.empty((len(q), n_groups)) for name in names}
    batch = max(1, _BATCH_CELLS // max(n, 1))
    for b in range(0, len(q), batch):
        qb = q[b : b + batch]
        scores = np.empty((len(qb), n), dtype=np.float32)
        for start, chunk in index.iter_chunks():
            scores[:, start : start + len(chunk)] = (chunk @ qb.T).T
        for name, values in group_stats(
            scores, groups.codes, n_groups, temperature=temperature, learned=learned
        ).items():
            stats[name][b : b + len(qb)] = values
    return GroupAttribution(groups, temperature, stats, aggregate)


def ranking_groups(
    index: Index,
    scores: np.ndarray,
    field: str,
    *,
    temperature: float = DEFAULT_GROUP_TEMPERATURE,
    pooler: LearnedPooler | None = None,
    aggregate: str = DEFAULT_GROUP_AGGREGATE,
) -> GroupAttribution:
    """Per-group statistics of one aggregate score per pool sample (``attribute --aggregate
    --group-by``); with ``pooler``, ``learned`` too; listed by ``aggregate``."""
    groups, learned = _groups_and_weights(index, field, pooler, aggregate)
    stats = group_stats(
        np.asarray(scores)[None],
        groups.codes,
        len(groups.names),
        temperature=temperature,
        learned=learned,
    )
    return GroupAttribution(groups, temperature, stats, aggregate)
