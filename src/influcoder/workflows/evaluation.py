"""An evaluation run: every method scored against the gradient ground truth, judged, written.

The one place that chains the evaluation stage's parts (score the methods, compute the metric
rows, check targets, write ``results.json``/``.csv`` and the HTML report); both
``influcoder evaluate`` and the demo call it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from influcoder.attribution.settings import (
    DEFAULT_GROUP_AGGREGATE,
    DEFAULT_GROUP_TEMPERATURE,
)
from influcoder.io.stores import Store

if TYPE_CHECKING:
    from influcoder.evaluation.group_fidelity import GroupFidelity

logger = logging.getLogger(__name__)

Target = tuple[str, bool, str]


@dataclass
class Evaluation:
    """What :func:`evaluate` found: one row of figures per method, and the targets checked."""

    rows: list[dict]
    #: name -> ``(scores, info)``, the ground truth first (``"gradient"``)
    methods: dict
    gt: np.ndarray
    labels: np.ndarray | None
    targets: list[Target] = field(default_factory=list)
    gt_pool: Store | None = None
    gt_queries: Store | None = None
    #: with ``group_by``: every method's group scores and figures
    groups: GroupFidelity | None = None
    #: the HTML report, once written (:func:`write_evaluation`)
    report: Path | None = None

    @property
    def expected_random_auprc(self) -> float | None:
        from influcoder.evaluation.evaluate import expected_random_auprc

        if self.labels is None:
            return None
        return expected_random_auprc(self.labels.size, int(self.labels.sum()))


def evaluate(
    gt_pool: Store,
    gt_queries: Store,
    *,
    stores: Mapping[str, tuple[Store, Store]] | None = None,
    encoders: Mapping[str, str] | None = None,
    baselines: Sequence[str] = (),
    gradient_dims: Sequence[int] = (),
    labels: np.ndarray | None = None,
    k: int = 10,
    seed: int = 0,
    targets: Sequence[str] = (),
    charge_gradient_time: bool = False,
    extra_targets: Callable[[list[dict]], list[Target]] | None = None,
    device: str = "cpu",
    group_by: str | None = None,
    group_aggregate: str = DEFAULT_GROUP_AGGREGATE,
    group_temperature: float = DEFAULT_GROUP_TEMPERATURE,
) -> Evaluation:
    """Score every method on ``gt_pool`` x ``gt_queries`` and compare it with the gradients.

    Target specs (``METHOD:METRIC>=VALUE``) are checked against the rows to come before the
    (maybe slow) scoring starts, so a typo fails at once. With ``charge_gradient_time``, the
    gradient rows' attribution time includes computing the queries' gradients, and their
    preparation the pool's (read from the stores' manifests): that is what the gradient path
    costs for new queries. ``extra_targets(rows)`` adds targets computed from the rows.
    ``device``: where the ``encoders`` run.

    ``group_by``: a metadata field of the pool samples; adds each method's group fidelity
    (``group_spearman``, ``group_top1``: :mod:`influcoder.evaluation.group_fidelity`) with the
    groups scored by ``group_aggregate`` (softmax at ``group_temperature``). The field is
    checked, like the targets, before the scoring starts.
    """
    from influcoder.evaluation.evaluate import (
        GROUND_TRUTH_METHOD,
        check_target,
        method_names,
        metric_rows,
        placeholder_rows,
        score_methods,
    )

    named = {
        "stores": dict(stores or {}),
        "encoders": dict(encoders or {}),
        "baselines": list(baselines),
        "gradient_dims": list(gradient_dims),
    }
    groups = None
    if group_by is not None:
        from influcoder.evaluation.group_fidelity import (
            check_group_options,
            evaluation_groups,
        )

        check_group_options(group_aggregate, group_temperature)
        groups = evaluation_groups(gt_pool.samples, group_by)
    expected = placeholder_rows(method_names(**named), k, labels is not None, groups is not None)
    for spec in targets:
        check_target(expected, spec)
    methods = score_methods(gt_pool, gt_queries, seed=seed, device=device, **named)
    pool_vectors = {name: info.pop("pool_vectors", None) for name, (_, info) in methods.items()}
    if charge_gradient_time:
        query_seconds = gradient_seconds(gt_queries)
        pool_seconds = gradient_seconds(gt_pool)
        for name, (_, info) in methods.items():
            if name.startswith(GROUND_TRUTH_METHOD):
                info["seconds"] += query_seconds
                info["prepare_seconds"] += pool_seconds
    gt = methods[GROUND_TRUTH_METHOD][0]
    rows = metric_rows(gt, methods, labels=labels, k=k)
    fidelity = None
    if groups is not None:
        from influcoder.evaluation.group_fidelity import add_group_columns, judge_groups

        fidelity = judge_groups(
            {name: s for name, (s, _) in methods.items()},
            gt,
            groups,
            aggregate=group_aggregate,
            temperature=group_temperature,
            learned=learned_weights(pool_vectors, named["encoders"], groups),
        )
        rows = add_group_columns(rows, fidelity)
    checked = [check_target(rows, spec) for spec in targets]
    if extra_targets is not None:
        checked += extra_targets(rows)
    return Evaluation(rows, methods, gt, labels, checked, gt_pool, gt_queries, fidelity)


def learned_weights(pool_vectors, encoders: Mapping[str, Any], groups) -> dict[str, np.ndarray]:
    """Method -> its pool samples' weights under its encoder's learned pooler, for each
    encoder (given by directory) that carries one (the ``learned`` group aggregate)."""
    from influcoder.encoders.directory import resolve_encoder
    from influcoder.encoders.pooler import read_pooler

    out = {}
    for name, encoder in encoders.items():
        path = resolve_encoder(encoder) if isinstance(encoder, (str, os.PathLike)) else None
        pooler = read_pooler(path) if path is not None and os.path.isdir(path) else None
        vectors = pool_vectors.get(name)
        if pooler is not None and vectors is not None:
            logits = pooler.logits(vectors)
            out[name] = pooler.member_weights(logits, groups.codes, len(groups.names))
    return out


def gradient_seconds(store: Store) -> float:
    """The wall time a gradient store's vectors took, as its manifest records it."""
    return float(store.manifest["provenance"].get("seconds") or 0.0)


def write_evaluation(
    evaluation: Evaluation,
    *,
    results_dir: str | os.PathLike,
    report_dir: str | os.PathLike | None = None,
    title: str = "influcoder evaluation",
    notes: Sequence[str] = (),
    context: Mapping[str, Any] | None = None,
    query_indices: Sequence[int] | None = None,
    queries_shown: int = 3,
) -> Path:
    """Write ``results.json`` and ``results.csv`` into ``results_dir`` and the HTML report
    into ``report_dir`` (default: the same directory); return the report's path (also set as
    ``evaluation.report``). With group fidelity, ``results.json`` records the groups under
    ``groups`` and the report shows them."""
    from influcoder.evaluation.evaluate import write_results
    from influcoder.evaluation.report import write_report

    j = evaluation
    context = dict(context or {})
    if j.groups is not None:
        context["groups"] = j.groups.context()
    write_results(
        results_dir,
        j.rows,
        **context,
        targets=[{"target": n, "achieved": a, "text": t} for n, a, t in j.targets],
    )
    j.report = write_report(
        report_dir or results_dir,
        j.rows,
        gt=j.gt,
        method_scores={name: s for name, (s, _) in j.methods.items()},
        labels=j.labels,
        pool_samples=j.gt_pool.samples if j.gt_pool is not None else None,
        query_samples=j.gt_queries.samples if j.gt_queries is not None else None,
        title=title,
        notes=notes,
        targets=j.targets,
        query_indices=query_indices,
        queries_shown=queries_shown,
        groups=j.groups,
    )
    return j.report
