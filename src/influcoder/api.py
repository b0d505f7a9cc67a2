"""The public Python API: one plain function per stage.

``collect`` (gradient stores) -> ``score`` (their influence) -> ``distill`` (an encoder) ->
``index`` (the pool, embedded) -> ``attribute`` | ``filter`` | ``select``; ``evaluate`` and
``validate`` judge the methods. Every verb takes paths or the objects the stage before it
returned, interchangeably: a :class:`~influcoder.io.stores.Store`, what ``distill`` returned,
an :class:`~influcoder.attribution.index.Index` or an
:class:`~influcoder.attribution.attributor.Attributor` (the first three are path-like).
Results name samples by their ids.

The verbs are thin: each opens what it is given and calls its stage's own function, where the
work and its documentation live (``collect`` is that function itself:
:func:`influcoder.groundtruth.collect.collect`). Nothing heavy is imported before a call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from influcoder.validation.settings import DEFAULT_VALIDATE_BASELINES

if TYPE_CHECKING:
    from influcoder.attribution.attributor import Attribution, Attributor
    from influcoder.attribution.filter import FilterResult
    from influcoder.attribution.index import Index
    from influcoder.attribution.select import SelectResult
    from influcoder.distillation.settings import DistillArguments
    from influcoder.distillation.trainer import DistillResult
    from influcoder.io.stores import Store
    from influcoder.validation.run import Validation
    from influcoder.validation.settings import ValidateArguments
    from influcoder.workflows.evaluation import Evaluation

#: The text baselines ``evaluate`` compares by default (as ``influcoder evaluate`` does).
DEFAULT_EVALUATE_BASELINES = ("random", "tfidf", "bm25")


# --- score -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    """Influence of every pool sample on every query: ``scores[i, j]`` is the cosine of pool
    sample ``pool_ids[i]`` and query ``query_ids[j]`` (the dot product for an encoder that
    compares so)."""

    pool_ids: list[str]
    query_ids: list[str]
    #: ``[n_pool, n_query]`` float32 (memory-mapped when ``score`` wrote it to ``out``)
    scores: np.ndarray

    def top(self, k: int = 10) -> dict[str, list[tuple[str, float]]]:
        """Query id -> its ``k`` most influential pool samples as ``(pool id, score)``, best
        first (ties: the earlier pool sample first)."""
        from influcoder.groundtruth.influence import TopK

        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        best = TopK(min(k, len(self.pool_ids)), len(self.query_ids))
        best.update(0, np.asarray(self.scores))
        rows, scores = best.result()
        return {
            q: [(self.pool_ids[r], float(s)) for r, s in zip(rows[:, j], scores[:, j])]
            for j, q in enumerate(self.query_ids)
        }


def score(
    pool: Store | str | os.PathLike,
    queries: Store | str | os.PathLike,
    out: str | os.PathLike | None = None,
) -> Scores:
    """The influence of every sample of the ``pool`` store on every sample of the ``queries``
    store (gradient stores from :func:`collect`, or embedding stores of one encoder).

    The matrix is held in memory; with ``out`` it is written there instead (``scores.npy``
    and ``scores.json``, as ``influcoder score --out`` writes) and read back memory-mapped.

    Example::

        >>> scores = score("runs/pool", "runs/queries")
        >>> scores.top(3)["q0"]
        [('p7', 0.41), ('p2', 0.33), ('p11', 0.29)]
    """
    from influcoder.groundtruth.influence import cosine_scores, load_scores, score_stores
    from influcoder.io.stores import open_store

    p, q = open_store(pool), open_store(queries)
    if out is None:
        return Scores(p.ids, q.ids, cosine_scores(p, q))
    score_stores(p, q, out)
    matrix, meta = load_scores(out)
    return Scores(meta["pool_ids"], meta["query_ids"], matrix)


# --- distill, index ----------------------------------------------------------------------------


def distill(
    pool: Store | str | os.PathLike,
    queries: Store | str | os.PathLike,
    out: str | os.PathLike,
    args: DistillArguments | None = None,
    *,
    encoder: str | os.PathLike | None = None,
    progress: bool = True,
    device: str = "auto",
) -> DistillResult:
    """Train an encoder to rank like the gradient influence of ``pool`` on ``queries``
    (gradient stores) and save it to ``out``; ``encoder``: the one to start from (default:
    the bundled ``all-minilm-l6-v2``). The result (figures, head) is path-like: ``index``,
    ``evaluate`` and ``validate`` take it for the directory ``out``. See
    :func:`influcoder.distillation.stores.distill_stores`."""
    from influcoder.distillation.stores import distill_stores
    from influcoder.encoders import settings as encoder_settings
    from influcoder.io.stores import open_store

    base = encoder_settings.DEFAULT_ENCODER if encoder is None else os.fspath(encoder)
    return distill_stores(
        open_store(pool),
        open_store(queries),
        out,
        args,
        encoder=base,
        progress=progress,
        device=device,
    )


def index(
    encoder: str | os.PathLike | DistillResult,
    data,
    out: str | os.PathLike,
    *,
    append: bool = False,
    approx: str | None = None,
    progress: bool = True,
    device: str = "auto",
    **options,
) -> Index:
    """Embed ``data`` (a data file, a list of samples, or a :class:`Store`: its samples) with
    ``encoder`` (a directory, what :func:`distill` returned, or ``all-minilm-l6-v2``) into
    the index ``out``; ``append`` adds a segment to an existing one. ``options``: the rest of
    :func:`influcoder.attribution.build.build_index` (``backend``, ``dtype``, ``fields``,
    ``limit``, ``engine``, ...)."""
    from influcoder.attribution.build import build_index

    return build_index(
        data,
        out,
        encoder,
        append=append,
        approx=approx,
        progress=progress,
        device=device,
        **options,
    )


# --- attribute, filter, select -----------------------------------------------------------------


def _attributor(index, encoder, backend: str, device: str, gradients=None) -> Attributor:
    from influcoder.attribution.attributor import Attributor

    if isinstance(index, Attributor):
        return index
    return Attributor.load(
        index, encoder, backend=backend, device=device, query_gradients=gradients
    )


def _queries(queries):
    """Queries as samples: a text or a list of texts and samples as they are; a ``Path`` or
    a :class:`Store` read as data (a plain ``str`` is always a text, never a file name)."""
    from influcoder.attribution.attributor import read_queries
    from influcoder.io.stores import Store

    if isinstance(queries, Store):
        return queries.samples
    if isinstance(queries, os.PathLike):
        return read_queries(os.fspath(queries))
    return queries


def _inputs(queries) -> list[str]:
    return [os.fspath(queries)] if isinstance(queries, os.PathLike) else []


def attribute(
    index: Index | Attributor | str | os.PathLike,
    queries,
    k: int = 10,
    *,
    encoder: str | os.PathLike | None = None,
    backend: str = "auto",
    device: str = "cpu",
    query_gradients: str | os.PathLike | Store | None = None,
) -> list[Attribution]:
    """The ``k`` pool samples of ``index`` most influential on each query, best first:
    ``[result.hits[0].id, ...]`` per query. ``queries``: a response text, a list of texts and
    :class:`Sample` objects, a ``pathlib.Path`` of a data file, or a store. ``index``: an
    index (its directory) or an :class:`Attributor`, which keeps the encoder loaded between
    calls. ``query_gradients``: a gradient store taken like the encoder's ground truth; each
    query is then its own gradient on the encoder's gradient basis (an :class:`Attributor`
    keeps the decoder loaded too); ``filter`` and ``select`` take it as well."""
    return _attributor(index, encoder, backend, device, query_gradients).attribute(
        _queries(queries), k
    )


def filter(
    index: Index | Attributor | str | os.PathLike,
    queries,
    out: str | os.PathLike,
    *,
    top_k: int | None = None,
    fraction: float | None = None,
    threshold: float | None = None,
    aggregate: str = "mean",
    encoder: str | os.PathLike | None = None,
    backend: str = "auto",
    device: str = "cpu",
    query_gradients: str | os.PathLike | Store | None = None,
) -> FilterResult:
    """Remove from the pool of ``index`` the samples most like ``queries`` (examples of
    unwanted outputs, as :func:`attribute` takes them) and write the rest to ``out``; exactly
    one of ``top_k``, ``fraction``, ``threshold``. ``.removed_ids`` names what went. See
    :func:`influcoder.attribution.filter.filter_pool`."""
    from influcoder.attribution.filter import filter_pool

    return filter_pool(
        _attributor(index, encoder, backend, device, query_gradients),
        _queries(queries),
        out,
        top_k=top_k,
        fraction=fraction,
        threshold=threshold,
        how=aggregate,
        inputs=_inputs(queries),
    )


def select(
    index: Index | Attributor | str | os.PathLike,
    targets,
    out: str | os.PathLike,
    *,
    fraction: float | None = None,
    count: int | None = None,
    aggregate: str | None = None,
    spread: bool = False,
    encoder: str | os.PathLike | None = None,
    backend: str = "auto",
    device: str = "cpu",
    query_gradients: str | os.PathLike | Store | None = None,
) -> SelectResult:
    """Choose the pool samples of ``index`` most helpful to ``targets`` (examples of the task,
    as :func:`attribute` takes queries) and write them to ``out``; exactly one of
    ``fraction`` and ``count``. ``.selected_ids`` names them. See
    :func:`influcoder.attribution.select.select_pool`."""
    from influcoder.attribution.select import select_pool
    from influcoder.attribution.settings import DEFAULT_SELECT_AGGREGATE

    return select_pool(
        _attributor(index, encoder, backend, device, query_gradients),
        _queries(targets),
        out,
        fraction=fraction,
        count=count,
        how=aggregate or DEFAULT_SELECT_AGGREGATE,
        spread=spread,
        inputs=_inputs(targets),
    )


# --- evaluate, validate ------------------------------------------------------------------------


def _encoders(encoders: Mapping | None) -> dict[str, str]:
    return {name: os.fspath(e) for name, e in (encoders or {}).items()}


def evaluate(
    pool: Store | str | os.PathLike,
    queries: Store | str | os.PathLike,
    *,
    encoders: Mapping[str, str | os.PathLike] | None = None,
    stores: Mapping[str, tuple] | None = None,
    baselines: Sequence[str] = DEFAULT_EVALUATE_BASELINES,
    gradient_dims: Sequence[int] = (),
    label_field: str | None = None,
    positive: str | None = None,
    k: int = 10,
    seed: int = 0,
    targets: Sequence[str] = (),
    group_by: str | None = None,
    out: str | os.PathLike | None = None,
    title: str = "influcoder evaluation",
    device: str = "cpu",
) -> Evaluation:
    """Compare attribution methods with the gradient ground truth of ``pool`` x ``queries``:
    ``encoders`` (name -> encoder directory, or what :func:`distill` returned), ``stores``
    (name -> (pool store, query store) of precomputed vectors), text ``baselines`` and
    re-sketches to ``gradient_dims``. ``.rows``: one row of figures per method
    (docs/EVALUATION.md); ``label_field``/``positive`` mark planted pool samples (AUPRC);
    ``targets``: ``METHOD:METRIC>=VALUE`` checks. With ``out``, ``results.json``/``.csv``
    and ``report.html`` are written there (``.report``). See
    :func:`influcoder.workflows.evaluation.evaluate`."""
    from influcoder.evaluation.evaluate import labels_from_samples
    from influcoder.io.stores import open_store
    from influcoder.workflows.evaluation import evaluate as run_evaluation
    from influcoder.workflows.evaluation import write_evaluation

    if (label_field is None) != (positive is None):
        raise ValueError("label_field and positive go together")
    gt_pool, gt_queries = open_store(pool), open_store(queries)
    labels = (
        labels_from_samples(gt_pool.samples, label_field, positive)
        if label_field is not None
        else None
    )
    pairs = {name: (open_store(a), open_store(b)) for name, (a, b) in (stores or {}).items()}
    evaluation = run_evaluation(
        gt_pool,
        gt_queries,
        stores=pairs,
        encoders=_encoders(encoders),
        baselines=list(baselines),
        gradient_dims=list(gradient_dims),
        labels=labels,
        k=k,
        seed=seed,
        targets=targets,
        device=device,
        group_by=group_by,
    )
    if out is not None:
        write_evaluation(
            evaluation,
            results_dir=out,
            title=title,
            context={"pool": str(gt_pool.path), "queries": str(gt_queries.path)},
        )
    return evaluation


def validate(
    pool: Store | str | os.PathLike,
    targets: Store | str | os.PathLike,
    heldout: Store | str | os.PathLike,
    out: str | os.PathLike,
    args: ValidateArguments | None = None,
    *,
    where: str | None = None,
    control=None,
    encoders: Mapping[str, str | os.PathLike] | None = None,
    baselines: Sequence[str] = DEFAULT_VALIDATE_BASELINES,
    label_field: str | None = None,
    positive: str | None = None,
    model: str | None = None,
    runs: str | os.PathLike | None = None,
    workers: int = 1,
    engine: str = "local",
    progress: bool = True,
    device: str = "cpu",
) -> Validation:
    """Remove each method's top-ranked pool samples for the ``targets`` queries, retrain the
    adapter, and measure the loss on ``heldout`` (gradient stores made alike; ``where``:
    ``FIELD=VALUE`` keeps the matching target and held-out samples, the other held-out ones
    are the control). The methods: the gradient, ``encoders`` and text ``baselines``.
    ``.rows``: the effects; ``.removed_ids``: what each method removed. Writes the run store
    (``runs``, default ``out/runs``) and the report into ``out``. See
    :func:`influcoder.workflows.validation.run_validation`."""
    from influcoder.validation.settings import ValidateArguments
    from influcoder.workflows.validation import run_validation

    if (label_field is None) != (positive is None):
        raise ValueError("label_field and positive go together")
    validation, _, _ = run_validation(
        pool,
        targets,
        heldout,
        out,
        args or ValidateArguments(),
        device=device,
        progress=progress,
        workers=workers,
        engine=engine,
        runs_dir=runs,
        where=where,
        control=control,
        encoders=_encoders(encoders),
        baselines=list(baselines),
        label_field=label_field,
        positive=positive,
        model=model,
    )
    return validation


__all__ = [
    "Scores",
    "attribute",
    "distill",
    "evaluate",
    "filter",
    "index",
    "score",
    "select",
    "validate",
]
