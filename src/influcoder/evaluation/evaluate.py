"""Judging attribution methods against the ground truth: one row of figures per method.

:func:`evaluate` takes the ground-truth influence matrix (``[n_pool, n_query]``, gradient
cosines) and each method's ``(scores, info)`` as :mod:`influcoder.evaluation.baselines` returns them, and
computes, per method, the metrics of :mod:`influcoder.metrics` plus the cost the method reported.
The rows print as a plain-text table (:func:`format_table`), save as JSON and CSV
(:func:`write_results`) and feed the HTML report (:mod:`influcoder.evaluation.report`).
``docs/EVALUATION.md`` defines every column and says how to read it.

Also here: reading planted-sample labels from the samples' ``meta``
(:func:`labels_from_samples`), checking that a method's samples line up with the ground
truth's (:func:`check_aligned`), and checking targets such as
``distilled:per_anchor_spearman>=0.5`` against the rows (:func:`check_target`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from influcoder import metrics
from influcoder.errors import InputError, StoreError
from influcoder.evaluation.baselines import (
    BASELINES,
    MethodResult,
    encoder_scores,
    store_scores,
)
from influcoder.evaluation.repsim import MODEL_BASELINES
from influcoder.io.atomic import atomic_write_bytes
from influcoder.io.samples import Sample
from influcoder.io.stores import Store
from influcoder.io.tables import column_names, format_value

logger = logging.getLogger(__name__)


RESULTS_JSON = "results.json"


RESULTS_CSV = "results.csv"


COST_COLUMNS = ("seconds", "prepare_seconds", "bytes_per_sample")


#: The columns ``--group-by`` adds (:mod:`influcoder.evaluation.group_fidelity`).
GROUP_COLUMNS = ("group_spearman", "group_top1")


DEFAULT_K = 10


#: The name under which :func:`score_methods` reports the ground truth itself.
GROUND_TRUTH_METHOD = "gradient"


_TARGET = re.compile(
    r"^\s*(?P<method>[^:]+?)\s*:\s*(?P<metric>[^<>=\s]+)\s*"
    r"(?P<op>>=|<=)\s*(?P<value>\S+)\s*$"
)


def method_names(
    *,
    gradient_dims: Sequence[int] = (),
    baselines: Sequence[str] = (),
    stores: Mapping[str, Any] | None = None,
    encoders: Mapping[str, Any] | None = None,
) -> list[str]:
    """The names :func:`score_methods` gives its methods, in its order (repeats included), so
    that targets can be checked before anything is scored."""
    return (
        [GROUND_TRUTH_METHOD]
        + [f"{GROUND_TRUTH_METHOD}@{d}" for d in gradient_dims]
        + list(baselines)
        + list(stores or {})
        + list(encoders or {})
    )


def placeholder_rows(
    names: Sequence[str], k: int, labels: bool, groups: bool = False
) -> list[dict]:
    """Rows of NaN with the columns an evaluation will produce (with ``groups``, the
    :data:`GROUP_COLUMNS` too), for checking target specs (:func:`check_target`) before the
    real figures exist."""
    columns = (
        metric_columns(k, labels) + (list(GROUP_COLUMNS) if groups else []) + list(COST_COLUMNS)
    )
    return [{"method": name, **dict.fromkeys(columns, math.nan)} for name in names]


def score_methods(
    gt_pool: Store,
    gt_queries: Store,
    *,
    stores: Mapping[str, tuple[Store, Store]] | None = None,
    encoders: Mapping[str, Any] | None = None,
    baselines: Sequence[str] = (),
    gradient_dims: Sequence[int] = (),
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, MethodResult]:
    """Score every method on the ground truth's samples: name -> ``(scores, info)``.

    The first entry is always the ground truth itself, ``"gradient"`` (the cosine of the two
    gradient stores, with its own cost); then ``gradient@D`` for each re-sketch dimension, the
    ``baselines`` (names of :data:`~influcoder.evaluation.baselines.BASELINES`, or ``repsim``,
    the decoder's own representations: :mod:`influcoder.evaluation.repsim`), each pair of
    ``stores`` (pool, queries) and each of ``encoders`` (a ``SentenceTransformer``, or a name
    or directory :func:`~influcoder.encoders.directory.load_encoder` takes), in that order.

    Args:
        gt_pool, gt_queries: the gradient stores that define the ground truth.
        stores: name -> (pool store, query store) of precomputed vectors (embedding stores,
            gradient stores of another recipe), or (pool store, query store, similarity:
            ``cosine`` or ``inner``); each must hold the ground truth's samples in the same
            order.
        encoders: name -> encoder, run on the ground truth's samples now.
        baselines: text baselines to run.
        gradient_dims: dimensions to re-sketch the gradient stores to, each at most
            ``gt_pool.dim``.
        seed: seed of the ``random`` baseline and of the re-sketches.
        device: where encoders given by name run (a ``--device`` value).

    Raises:
        StoreError: if the stores are not comparable or hold other samples than the ground
            truth.
        ValueError: on an unknown baseline, a name used twice, or a dimension out of range.
    """
    stores, encoders = dict(stores or {}), dict(encoders or {})
    known = {**BASELINES, **MODEL_BASELINES}
    unknown = [b for b in baselines if b not in known]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; choose from {sorted(known)}")
    bad_dims = [d for d in gradient_dims if not 1 <= d <= gt_pool.dim]
    if bad_dims:
        raise ValueError(
            f"gradient dims {bad_dims} out of range: the stored gradients have "
            f"{gt_pool.dim} dimensions, re-sketches must have between 1 and that"
        )
    pool_samples, query_samples = gt_pool.samples, gt_queries.samples
    names = method_names(
        gradient_dims=gradient_dims, baselines=baselines, stores=stores, encoders=encoders
    )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"method names used more than once: {repeated}")
    # In the order of method_names.
    jobs = [partial(store_scores, gt_pool, gt_queries)]
    jobs += [partial(store_scores, gt_pool, gt_queries, dim=d, seed=seed) for d in gradient_dims]
    jobs += [
        partial(MODEL_BASELINES[name], gt_pool, gt_queries, device=device)
        if name in MODEL_BASELINES
        else partial(
            BASELINES[name],
            pool_samples,
            query_samples,
            **({"seed": seed} if name == "random" else {}),
        )
        for name in baselines
    ]
    jobs += [
        partial(store_scores, pool, queries, similarity=rest[0] if rest else "cosine")
        for pool, queries, *rest in stores.values()
    ]
    jobs += [
        partial(encoder_scores, encoder, pool_samples, query_samples, device=device)
        for encoder in encoders.values()
    ]
    for name, (pool, queries, *_) in stores.items():
        check_aligned(gt_pool.ids, pool.ids, f"method {name!r}: pool store {pool.path}")
        check_aligned(gt_queries.ids, queries.ids, f"method {name!r}: query store {queries.path}")
    methods = {}
    for name, job in zip(names, jobs):
        logger.info(f"scoring {name}")
        methods[name] = job()
    return methods


def metric_columns(k: int, labels: bool) -> list[str]:
    """The metric columns of a row, in table order."""
    cols = [
        "per_anchor_spearman",
        "pairwise_spearman",
        "aggregated_spearman",
        f"ndcg@{k}",
        f"recall@{k}",
    ]
    return cols + ([f"auprc_{how}" for how in metrics.AUPRC_AGGREGATES] if labels else [])


def metric_rows(
    gt: np.ndarray,
    methods: Mapping[str, tuple[np.ndarray, Mapping[str, Any]]],
    *,
    labels: np.ndarray | None = None,
    k: int = DEFAULT_K,
) -> list[dict]:
    """One row of figures per method, in the order of ``methods``.

    Args:
        gt: ``[n_pool, n_query]`` ground-truth influence.
        methods: name -> ``(scores, info)``; ``scores`` of ``gt``'s shape, ``info`` with
            ``seconds``, ``prepare_seconds`` and ``bytes_per_sample`` (missing ones are NaN).
        labels: optional ``[n_pool]`` booleans marking the samples to find (planted harmful
            samples, say); adds ``auprc_mean`` and ``auprc_max``.
        k: the cut-off of ``ndcg@k`` and ``recall@k``, ``1 <= k <= n_pool``.

    Returns:
        Dicts with ``method``, the :func:`metric_columns` (floats; NaN where undefined, e.g.
        a Spearman of a constant prediction) and the :data:`COST_COLUMNS`.

    Each row holds:

    * ``per_anchor_spearman``, ``pairwise_spearman``, ``aggregated_spearman``,
      ``ndcg@k``, ``recall@k``: :mod:`influcoder.metrics` of ``scores`` against ``gt``;
    * ``auprc_mean`` / ``auprc_max``: :func:`~influcoder.metrics.auprc` of ``labels`` by each
      pool sample's score averaged / maximised over the queries.

    Raises:
        ValueError: if a matrix has the wrong shape or non-finite values, ``k`` is out of
            range, or ``labels`` has the wrong length or no positive.
    """
    gt = np.asarray(gt, dtype=np.float64)
    if gt.ndim != 2 or gt.size == 0:
        raise ValueError(f"gt must be a non-empty [n_pool, n_query] matrix, got shape {gt.shape}")
    if not methods:
        raise ValueError("no methods to evaluate")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (gt.shape[0],):
            raise ValueError(
                f"labels must have one entry per pool sample ({gt.shape[0]}), "
                f"got shape {labels.shape}"
            )
    rows = []
    for name, (scores, info) in methods.items():
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != gt.shape:
            raise ValueError(
                f"method {name!r}: scores have shape {scores.shape}, the ground truth {gt.shape}"
            )
        row: dict[str, Any] = {
            "method": name,
            "per_anchor_spearman": metrics.per_anchor_spearman(gt, scores),
            "pairwise_spearman": metrics.pairwise_spearman(gt, scores),
            "aggregated_spearman": metrics.aggregated_spearman(gt, scores),
            f"ndcg@{k}": metrics.ndcg_at_k(gt, scores, k),
            f"recall@{k}": metrics.recall_at_k(gt, scores, k),
        }
        if labels is not None:
            for how in metrics.AUPRC_AGGREGATES:
                row[f"auprc_{how}"] = metrics.auprc(labels, metrics.aggregate_scores(scores, how))
        for col in COST_COLUMNS:
            row[col] = float(info.get(col, math.nan))
        rows.append(row)
    return rows


def _jsonable(value: Any) -> Any:
    """``value`` with NaN and infinities as None and numpy scalars as Python ones."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(
    out_dir: str | os.PathLike, rows: Sequence[Mapping[str, Any]], **context: Any
) -> tuple[Path, Path]:
    """Write ``results.json`` (``{**context, "rows": rows}``, NaN as null) and ``results.csv``
    (the rows only, NaN as an empty cell) into ``out_dir``, atomically. Returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / RESULTS_JSON, out / RESULTS_CSV
    doc = _jsonable({**context, "rows": list(rows)})
    atomic_write_bytes(json_path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=column_names(rows), lineterminator="\n")
    writer.writeheader()
    for row in _jsonable(list(rows)):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    atomic_write_bytes(csv_path, buffer.getvalue().encode("utf-8"))
    return json_path, csv_path


def expected_random_auprc(n: int, n_positive: int) -> float:
    """The AUPRC a uniformly random ranking of ``n`` samples with ``n_positive`` positives
    scores on average (exact)::

        E[AUPRC] = (H_n + (P - 1) / (n - 1) * (n - H_n)) / n,    H_n = 1 + 1/2 + ... + 1/n

    It is the positive rate ``P / n`` plus a small-sample term: 0.153 for 3 positives among
    40 (rate 0.075), 0.017 for 10 among 1000 (rate 0.01). Derivation: the ``k``-th ranked
    sample is positive with probability ``P / n``, and given that, the precision at ``k`` is
    ``(1 + (k - 1)(P - 1)/(n - 1)) / k`` on average.
    """
    if not 1 <= n_positive <= n:
        raise ValueError(f"need 1 <= n_positive <= n, got {n_positive} of {n}")
    if n == 1:
        return 1.0
    harmonic = float(np.sum(1.0 / np.arange(1, n + 1)))
    return (harmonic + (n_positive - 1) / (n - 1) * (n - harmonic)) / n


def labels_from_samples(samples: Sequence[Sample], field: str, positive: str) -> np.ndarray:
    """Booleans, one per sample: is ``sample.meta[field]`` the ``positive`` value?

    Values compare as text, case-insensitively (``--positive true`` matches ``True``). A sample
    without the field counts as negative.

    Raises:
        InputError: if no sample has the field, or none has the positive value.
    """
    values = [s.meta.get(field) for s in samples]
    if all(v is None for v in values):
        raise InputError(
            f"no sample has the label field '{field}' in its meta; fields seen: "
            f"{sorted({k for s in samples for k in s.meta})[:20]}"
        )
    wanted = positive.strip().lower()
    labels = np.array([v is not None and str(v).strip().lower() == wanted for v in values])
    if not labels.any():
        seen = sorted({str(v) for v in values if v is not None})
        raise InputError(
            f"no sample has {field} = '{positive}', so there is nothing to find "
            f"and AUPRC is undefined; values seen: {seen[:20]}"
        )
    return labels


def check_aligned(expected_ids: Sequence[str], ids: Sequence[str], what: str) -> None:
    """Refuse ``ids`` unless they are ``expected_ids``, in the same order.

    Raises:
        StoreError: naming ``what``, the counts or the first position that differs.
    """
    if list(ids) == list(expected_ids):
        return
    if len(ids) != len(expected_ids):
        raise StoreError(
            f"{what}: {len(ids)} samples, the ground truth has "
            f"{len(expected_ids)}; both must hold the same samples in the same order"
        )
    i = next(i for i, (a, b) in enumerate(zip(expected_ids, ids)) if a != b)
    detail = (
        "the same samples in another order"
        if sorted(ids) == sorted(expected_ids)
        else "different samples"
    )
    raise StoreError(
        f"{what}: {detail} than the ground truth (row {i}: id {ids[i]!r}, "
        f"expected {expected_ids[i]!r}); build both from the same data file"
    )


class TargetError(ValueError):
    """A target spec that cannot be checked: not ``METHOD:METRIC>=VALUE``, or naming a method
    or metric that is not there."""


def check_target(rows: Sequence[Mapping[str, Any]], spec: str) -> tuple[str, bool, str]:
    """Check a target ``METHOD:METRIC>=VALUE`` (or ``<=``) against the rows.

    Returns:
        ``(spec, achieved, text)``, as :func:`influcoder.evaluation.report.write_report` takes targets;
        ``text`` states the value reached. A NaN value never meets a target.

    Raises:
        ValueError: on a malformed spec, or a method or metric absent from the rows.
    """
    match = _TARGET.match(spec)
    if match is None:
        raise TargetError(f"target {spec!r} is not METHOD:METRIC>=VALUE or METHOD:METRIC<=VALUE")
    method, metric, op = match["method"], match["metric"], match["op"]
    try:
        bound = float(match["value"])
    except ValueError:
        raise TargetError(f"target {spec!r}: {match['value']!r} is not a number") from None
    row = next((r for r in rows if r["method"] == method), None)
    if row is None:
        raise TargetError(
            f"target {spec!r}: no method {method!r}; methods: {[r['method'] for r in rows]}"
        )
    if metric not in row or metric == "method":
        raise TargetError(
            f"target {spec!r}: no metric {metric!r}; metrics: {[c for c in row if c != 'method']}"
        )
    value = float(row[metric])
    achieved = math.isfinite(value) and (value >= bound if op == ">=" else value <= bound)
    text = f"{method} {metric} = {format_value(metric, value)} (target {op} {bound:g})"
    return f"{method}:{metric}{op}{bound:g}", achieved, text
