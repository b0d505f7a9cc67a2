"""Group-level fidelity (``evaluate --group-by FIELD``): does a method name the same data
source as the gradients?

The pool splits into groups by a metadata field of its samples (a source, a file, a label:
:func:`influcoder.attribution.groups.pool_groups`, as ``attribute --group-by`` reads it). For
each method and query, a group's score is one statistic of the method's scores of every pool
sample in the group (``--group-aggregate``: mean, sum, max, or AirRep's softmax-weighted score,
computed by :func:`influcoder.attribution.groups.group_stats`). Two figures per method compare
its group scores with the ground truth's (``gradient``):

* ``group_spearman``: for each query, the Spearman rank correlation over the groups between
  the method's group scores and the gradient's, averaged over the queries. A query whose group
  scores are constant (in either) has no ranking to agree with and counts as 0, as in
  ``per_anchor_spearman``; how many queries did is reported (``undefined``), never hidden.
* ``group_top1``: the share of queries for which the method's top group is the gradient's.
  When several groups share the method's top score, the query counts the share of them that
  are among the gradient's top groups: the chance that the tie, broken at random, is right.

Every pool sample must have the field (a ``(missing)`` group would lump unrelated samples
together and judge them as one source), and there must be at least two groups, or no
ranking of groups exists; both are refused with an :class:`~influcoder.errors.InputError`.
Side by side (``by_aggregate``): each method's ``group_spearman`` under every aggregate (mean,
sum, max, softmax, and ``learned`` for an encoder that carries a learned pooler,
:mod:`influcoder.encoders.pooler`), all against one ranking, the gradient's groups by
``--group-aggregate``: which way of pooling a method's scores best reproduces the gradient's
group ranking. The softmax score depends on the scores' scale (``|s| / T``): on BM25's unbounded scores it is
close to the group's largest score, on cosines it is what ``attribute --group-by`` shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from influcoder import metrics
from influcoder.attribution.groups import PoolGroups, group_stats, pool_groups
from influcoder.attribution.settings import (
    DEFAULT_GROUP_AGGREGATE,
    DEFAULT_GROUP_TEMPERATURE,
    GROUP_STATS,
    LEARNED_AGGREGATE,
)
from influcoder.errors import InputError
from influcoder.evaluation.evaluate import COST_COLUMNS, GROUP_COLUMNS
from influcoder.io.samples import Sample


def check_group_options(aggregate: str, temperature: float) -> None:
    """Refuse an unknown aggregate or a temperature that is not positive (ValueError)."""
    if aggregate not in GROUP_STATS:
        raise ValueError(f"group aggregate must be one of {list(GROUP_STATS)}, got {aggregate!r}")
    if not temperature > 0:
        raise ValueError(f"group temperature must be > 0, got {temperature}")


def evaluation_groups(samples: Sequence[Sample], field: str) -> PoolGroups:
    """The pool split by ``field``, refusing a pool where some sample lacks it or that has
    fewer than two groups.

    Raises:
        InputError: naming the field and the first sample (row and id) without it, or the
            single group there is.
    """
    groups = pool_groups(samples, field)  # refuses a field that no sample has
    if groups.n_missing:
        i, sample = next(
            (i, s)
            for i, s in enumerate(samples)
            if s.meta.get(field) is None or s.meta.get(field) == ""
        )
        raise InputError(
            f"--group-by '{field}': pool sample {sample.id!r} (row {i}) has no "
            f"'{field}' in its metadata, nor do {groups.n_missing - 1} other pool "
            f"samples of {len(samples)}; group fidelity needs the field on every "
            f"pool sample"
        )
    if len(groups.names) < 2:
        raise InputError(
            f"--group-by '{field}': every pool sample has the value "
            f"{groups.names[0]!r}, so there is no ranking of groups to judge; "
            f"group fidelity needs at least 2 groups"
        )
    return groups


def group_scores(
    scores: np.ndarray,
    groups: PoolGroups,
    *,
    aggregate: str = DEFAULT_GROUP_AGGREGATE,
    temperature: float = DEFAULT_GROUP_TEMPERATURE,
) -> np.ndarray:
    """``[n_query, n_groups]``: each query's ``aggregate`` of the ``[n_pool, n_query]``
    ``scores`` over each group's samples."""
    check_group_options(aggregate, temperature)
    stats = group_stats(
        np.asarray(scores, dtype=np.float64).T,
        groups.codes,
        len(groups.names),
        temperature=temperature,
    )
    return stats[aggregate]


def top1_agreement(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per query (row of the ``[n_query, n_groups]`` matrices): the share of ``pred``'s
    top-scoring groups that are among ``gt``'s top-scoring groups (1 or 0 without ties)."""
    pred_top = pred == pred.max(axis=1, keepdims=True)
    gt_top = gt == gt.max(axis=1, keepdims=True)
    return (pred_top & gt_top).sum(axis=1) / pred_top.sum(axis=1)


def fidelity(gt: np.ndarray, pred: np.ndarray) -> dict[str, float | int]:
    """The group figures of one method's ``[n_query, n_groups]`` group scores against the
    ground truth's: ``group_spearman``, ``group_top1`` and ``undefined`` (the queries whose
    Spearman is undefined and counts as 0)."""
    rho = metrics.column_spearman(gt.T, pred.T)
    undefined = int(np.isnan(rho).sum())
    return {
        "group_spearman": float(np.nan_to_num(rho, nan=0.0).mean()),
        "group_top1": float(top1_agreement(gt, pred).mean()),
        "undefined": undefined,
    }


@dataclass(frozen=True)
class GroupFidelity:
    """Every method's group scores and figures, for the results and the report."""

    groups: PoolGroups
    aggregate: str
    temperature: float
    #: method -> ``[n_query, n_groups]`` group scores, in the methods' order
    scores: dict[str, np.ndarray]
    #: method -> :func:`fidelity`'s dict
    figures: dict[str, dict[str, float | int]]
    #: method -> aggregate -> ``group_spearman`` against the gradient's groups by ``aggregate``
    by_aggregate: dict[str, dict[str, float]] = field(default_factory=dict)

    def context(self) -> dict[str, Any]:
        """What ``results.json`` records under ``groups``."""
        sizes = self.groups.sizes
        return {
            "field": self.groups.field,
            "aggregate": self.aggregate,
            "temperature": self.temperature,
            "groups": {name: int(n) for name, n in zip(self.groups.names, sizes)},
            "undefined_queries": {name: f["undefined"] for name, f in self.figures.items()},
            "by_aggregate": self.by_aggregate,
        }


def judge_groups(
    method_scores: Mapping[str, np.ndarray],
    gt: np.ndarray,
    groups: PoolGroups,
    *,
    aggregate: str = DEFAULT_GROUP_AGGREGATE,
    temperature: float = DEFAULT_GROUP_TEMPERATURE,
    learned: Mapping[str, np.ndarray] | None = None,
) -> GroupFidelity:
    """Group scores and figures of every method (name -> ``[n_pool, n_query]`` scores)
    against the ground truth ``gt`` (``[n_pool, n_query]``); ``learned``: method -> its pool
    samples' learned-pooler weights (:meth:`~influcoder.encoders.pooler.LearnedPooler.
    member_weights`), for the ``learned`` column of ``by_aggregate``."""
    gt_groups = group_scores(gt, groups, aggregate=aggregate, temperature=temperature)
    scores = {
        name: group_scores(s, groups, aggregate=aggregate, temperature=temperature)
        for name, s in method_scores.items()
    }
    figures = {name: fidelity(gt_groups, g) for name, g in scores.items()}
    by_aggregate = {}
    for name, s in method_scores.items():
        weights = (learned or {}).get(name)
        stats = group_stats(
            np.asarray(s, dtype=np.float64).T,
            groups.codes,
            len(groups.names),
            temperature=temperature,
            learned=weights,
        )
        names = [*GROUP_STATS, *([LEARNED_AGGREGATE] if weights is not None else [])]
        by_aggregate[name] = {a: fidelity(gt_groups, stats[a])["group_spearman"] for a in names}
    return GroupFidelity(groups, aggregate, temperature, scores, figures, by_aggregate)


def add_group_columns(
    rows: Sequence[Mapping[str, Any]], result: GroupFidelity
) -> list[dict[str, Any]]:
    """The rows with :data:`GROUP_COLUMNS` after the metric columns, before the costs."""
    out = []
    for row in rows:
        figures = result.figures[row["method"]]
        metric = {k: v for k, v in row.items() if k not in COST_COLUMNS}
        cost = {k: v for k, v in row.items() if k in COST_COLUMNS}
        out.append({**metric, **{c: figures[c] for c in GROUP_COLUMNS}, **cost})
    return out
