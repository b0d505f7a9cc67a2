"""A validation from stores on disk: what ``influcoder validate`` runs.

Reads the pool's gradient store (the training data and the model recipe), the target and
held-out query stores, picks the rows a ``FIELD=VALUE`` filter keeps (the rest of the held-out
store becomes the control set unless one is given), scores every method on both query sets
(:func:`influcoder.evaluation.evaluate.score_methods`, as ``influcoder evaluate`` does), runs
:func:`influcoder.validation.run.validate` and writes its outputs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from influcoder.errors import InflucoderError, InputError
from influcoder.io.samples import Sample, parse_where
from influcoder.io.stores import MANIFEST_NAME, Store, check_same_setup, open_store
from influcoder.validation.run import CONTROL, HELDOUT, Validation
from influcoder.validation.settings import ValidateArguments

logger = logging.getLogger(__name__)


def _matching(store: Store, where: tuple[str, str] | None) -> np.ndarray:
    """Boolean mask of the store's samples that meet ``where`` (all without one)."""
    samples = store.samples
    if where is None:
        return np.ones(len(samples), dtype=bool)
    name, value = where
    missing = [s.id for s in samples if name not in s.meta]
    if len(missing) == len(samples):
        raise InputError(f"no sample has the field '{name}'", path=str(store.path), field=name)
    mask = np.array([str(s.meta.get(name)) == value for s in samples])
    if not mask.any():
        raise InputError(f"no sample has {name}={value}", path=str(store.path), field=name)
    return mask


def read_control(path: str | os.PathLike) -> list[Sample]:
    """Control samples from a store folder or a data file."""
    from influcoder.io.samples import load_samples

    if Path(path, MANIFEST_NAME).is_file():
        return open_store(path).samples
    return load_samples(path)


@dataclass
class Inputs:
    """The stores, the model recipe, the evaluation sets and the methods' target scores."""

    pool: Store
    targets: Store
    heldout: Store
    recipe: object
    target_rows: np.ndarray
    heldout_rows: np.ndarray
    eval_sets: dict
    labels: np.ndarray | None
    target_scores: dict
    methods: dict


def read_inputs(
    pool,
    targets,
    heldout,
    *,
    where=None,
    control=None,
    encoders=None,
    baselines=(),
    label_field=None,
    positive=None,
    model=None,
    device="cpu",
    seed: int = 0,
) -> Inputs:
    """Open and check the stores, split them by ``where``, score every method on the targets."""
    from influcoder.evaluation.evaluate import labels_from_samples, score_methods
    from influcoder.validation.retrain import Recipe

    condition = parse_where(where)
    gt_pool, gt_targets, gt_heldout = open_store(pool), open_store(targets), open_store(heldout)
    check_same_setup(gt_pool, gt_targets)
    check_same_setup(gt_pool, gt_heldout)
    recipe = Recipe.from_store(gt_pool, model)
    target_rows, heldout_rows = _matching(gt_targets, condition), _matching(gt_heldout, condition)
    eval_sets = {HELDOUT: [s for s, keep in zip(gt_heldout.samples, heldout_rows) if keep]}
    if control is not None:
        eval_sets[CONTROL] = read_control(control)
    elif condition is not None and not heldout_rows.all():
        eval_sets[CONTROL] = [s for s, keep in zip(gt_heldout.samples, heldout_rows) if not keep]
    labels = (
        labels_from_samples(gt_pool.samples, label_field, positive)
        if label_field is not None
        else None
    )
    methods = {
        "encoders": dict(encoders or {}),
        "baselines": list(baselines),
        "seed": seed,
        "device": device,
    }
    logger.info(
        f"scoring the methods on {gt_pool.n} pool x {int(target_rows.sum())} target queries"
    )
    scored = score_methods(gt_pool, gt_targets, **methods)
    return Inputs(
        gt_pool,
        gt_targets,
        gt_heldout,
        recipe,
        target_rows,
        heldout_rows,
        eval_sets,
        labels,
        {m: s[:, target_rows] for m, (s, _) in scored.items()},
        methods,
    )


def _factory(inputs: Inputs, args: ValidateArguments, device: str, progress: bool = False):
    from influcoder.validation.execute import RetrainFactory
    from influcoder.validation.run import warm_adapter

    return RetrainFactory(
        inputs.recipe,
        list(inputs.pool.samples),
        {k: list(v) for k, v in inputs.eval_sets.items()},
        args,
        device=device,
        adapter=warm_adapter(inputs.pool, args),
        progress=progress,
    )


def estimate_validation(
    pool,
    targets,
    heldout,
    out,
    args: ValidateArguments,
    *,
    device: str = "cpu",
    workers: int = 1,
    runs_dir=None,
    **named,
) -> list[str]:
    """``--dry-run``: the runs a validation needs and their expected time; writes nothing."""
    from influcoder.validation.run import estimate

    named = {k: v for k, v in named.items() if k not in ("engine", "address", "by")}
    inputs = read_inputs(pool, targets, heldout, device=device, seed=args.lds_seed, **named)
    return estimate(
        inputs.pool,
        inputs.target_scores,
        inputs.eval_sets,
        out,
        args,
        _factory(inputs, args, device),
        recipe=inputs.recipe,
        workers=workers,
        runs_dir=runs_dir,
    )


def run_validation(
    pool: str | os.PathLike,
    targets: str | os.PathLike,
    heldout: str | os.PathLike,
    out: str | os.PathLike,
    args: ValidateArguments,
    *,
    device: str = "cpu",
    progress: bool = True,
    workers: int = 1,
    engine: str = "local",
    address: str | None = None,
    by: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    **named,
) -> tuple[Validation, dict, Path]:
    """Validate the methods on stores; return ``(validation, context, report path)``.
    ``workers``, ``engine``, ``address``: where the runs are trained
    (:func:`~influcoder.validation.execute.get_retrain_engine`); ``by``: a query field to
    report LDS per value of (default: the field of ``where``); ``runs_dir``: the run store
    (default ``out/runs``); ``named``: the options of :func:`read_inputs`."""
    from influcoder.evaluation.evaluate import score_methods
    from influcoder.validation.execute import get_retrain_engine
    from influcoder.validation.report import write_validation
    from influcoder.validation.run import validate

    condition = parse_where(named.get("where"))
    if by is None and condition is not None:
        by = condition[0]
    inputs = read_inputs(pool, targets, heldout, device=device, seed=args.lds_seed, **named)
    query_scores = None
    if args.lds_subsets:
        scored = score_methods(inputs.pool, inputs.heldout, **inputs.methods)
        query_scores = {m: s for m, (s, _) in scored.items()}
    factory = _factory(inputs, args, device, progress and workers == 1 and engine == "local")
    validation = validate(
        inputs.pool,
        inputs.target_scores,
        query_scores,
        inputs.heldout.samples,
        inputs.eval_sets,
        out,
        args,
        factory,
        recipe=inputs.recipe,
        labels=inputs.labels,
        engine=get_retrain_engine(engine, workers=workers, address=address),
        by=by,
        runs_dir=runs_dir,
        progress=progress,
    )
    validation.notes.append(
        "A removal's effect is the change in mean response loss of the held-out samples "
        "(the control samples) between the adapter trained without the removed samples and "
        "the one trained on the full pool with the same seed."
    )
    gt_pool, labels = inputs.pool, inputs.labels
    runs = str(runs_dir or Path(out) / "runs")
    if args.lds_subsets:
        validation.notes.append(
            "To compare other methods against these runs in seconds, with their intervals "
            f"drawn per group on a page: influcoder lds {runs} {gt_pool.path} "
            f"{inputs.heldout.path} -e NAME=ENCODER --baselines bm25,tfidf,random"
            f"{f' --by {by}' if by else ''} --html lds.html"
        )
    context = {
        "pool": str(gt_pool.path),
        "targets": str(inputs.targets.path),
        "heldout": str(inputs.heldout.path),
        "where": named.get("where"),
        "runs": runs,
        "n_pool": gt_pool.n,
        "n_targets": int(inputs.target_rows.sum()),
        "n_heldout": len(inputs.eval_sets[HELDOUT]),
        "n_control": len(inputs.eval_sets.get(CONTROL, [])),
        "planted": None if labels is None else int(labels.sum()),
        "removed_ids": validation.removed_ids,
    }
    return validation, context, write_validation(out, validation, context=context)


def saved_scores(
    runs: str | os.PathLike,
    pool: str | os.PathLike,
    queries: str | os.PathLike,
    *,
    encoders=None,
    baselines=(),
    stores=None,
    seed: int = 0,
    device: str = "cpu",
    query_gradients: bool = False,
    pool_vectors: dict | None = None,
):
    """Open a run store and score every method for it: ``(run store, method -> [n_pool,
    n_queries] scores, the query samples)``. Methods: the gradient of ``pool`` and
    ``queries``, each encoder, baseline and pair of precomputed ``stores`` (name -> (pool
    store path, query store path[, similarity: ``cosine`` or ``inner``])); ``pool`` must hold
    the samples the runs trained on. With ``query_gradients``, also ``NAME+query-grad`` for
    each encoder: the queries' own gradients in its gradient basis against its pool
    embeddings (:mod:`influcoder.attribution.query_gradients`). A ``pool_vectors`` dict is
    filled with each encoder's pool embeddings."""
    from influcoder.errors import StoreError
    from influcoder.evaluation.evaluate import score_methods
    from influcoder.validation.runstore import open_runs

    saved = open_runs(runs)
    gt_pool, gt_queries = open_store(pool), open_store(queries)
    check_same_setup(gt_pool, gt_queries)
    if gt_pool.manifest["samples_sha256"] != saved.manifest["pool"]["samples_sha256"]:
        raise StoreError(
            f"{gt_pool.path} holds other samples than the pool the runs of "
            f"{saved.path} trained on (manifest.json field pool.samples_sha256)"
        )
    opened = {
        name: (open_store(a), open_store(b), *rest)
        for name, (a, b, *rest) in (stores or {}).items()
    }
    scored = score_methods(
        gt_pool,
        gt_queries,
        stores=opened,
        encoders=dict(encoders or {}),
        baselines=list(baselines),
        seed=seed,
        device=device,
    )
    scores = {m: s for m, (s, _) in scored.items()}
    if pool_vectors is not None:
        pool_vectors.update({name: scored[name][1]["pool_vectors"] for name in encoders or {}})
    if query_gradients:
        from influcoder.attribution.query_gradients import stored_query_scores
        from influcoder.encoders.basis import BASIS_NAME, has_basis
        from influcoder.encoders.directory import resolve_encoder

        paths = {name: resolve_encoder(encoder) for name, encoder in dict(encoders or {}).items()}
        if not any(has_basis(path) for path in paths.values()):
            raise InflucoderError(
                f"--query-gradients: no --encoder has a gradient basis ({BASIS_NAME}); only "
                "an encoder distilled with a head (influcoder distill) by this version or "
                "later has one"
            )
        for name, path in paths.items():
            if not has_basis(path):
                logger.info(f"--query-gradients: {name} has no gradient basis; left out")
                continue
            pool_embeddings = scored[name][1]["pool_vectors"]
            scores[f"{name}+query-grad"] = stored_query_scores(path, pool_embeddings, gt_queries)
    return saved, scores, gt_queries.samples


def run_lds(
    runs: str | os.PathLike,
    pool: str | os.PathLike,
    queries: str | os.PathLike,
    *,
    encoders=None,
    baselines=(),
    stores=None,
    by: str | Sequence[str] | None = None,
    count: int | None = None,
    fraction: float | None = None,
    subset_seed: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    query_gradients: bool = False,
    group_removal: str | None = None,
    group_min_size: int = 5,
    temperature: float | None = None,
    paired: Sequence[tuple[str, str]] = (),
) -> list[dict]:
    """Every method's LDS on the saved runs of a run store, without retraining
    (``influcoder lds``); the methods as :func:`saved_scores` takes them. With
    ``group_removal`` (a pool field whose groups ``validate --group-removal`` removed), each
    row also gets ``group_removal``: aggregate -> ``{group_spearman, low, high, groups,
    queries}`` (:mod:`influcoder.validation.group_removal`). Each pair ``(a, b)`` of ``paired``
    adds to ``a``'s row, under ``paired``, :func:`~influcoder.validation.saved.paired_rows`."""
    from influcoder.validation.saved import paired_rows, score_runs

    vectors: dict = {}
    saved, scores, samples = saved_scores(
        runs,
        pool,
        queries,
        encoders=encoders,
        baselines=baselines,
        stores=stores,
        seed=seed,
        device=device,
        query_gradients=query_gradients,
        pool_vectors=vectors,
    )
    series = {"count": count, "fraction": fraction, "seed": subset_seed}  # as lds_runs takes it
    rows = score_runs(
        saved,
        scores,
        samples,
        by=by,
        count=count,
        fraction=fraction,
        subset_seed=subset_seed,
        n_boot=n_boot,
        seed=seed,
    )
    by_method = {row["method"]: row for row in rows}
    pairs = paired_rows(
        saved, scores, samples, paired, by=by, which=series, n_boot=n_boot, seed=seed
    )
    for found in pairs:
        by_method[found["a"]].setdefault("paired", []).append(found)
    if group_removal:
        from influcoder.attribution.settings import DEFAULT_GROUP_TEMPERATURE
        from influcoder.validation.group_removal import group_removal_rows, learned_logits

        found = group_removal_rows(
            saved,
            scores,
            samples,
            open_store(pool).samples,
            group_removal,
            min_size=group_min_size,
            learned=learned_logits(dict(encoders or {}), vectors),
            temperature=DEFAULT_GROUP_TEMPERATURE if temperature is None else temperature,
            n_boot=n_boot,
            seed=seed,
        )
        for row in rows:
            row["group_removal"] = {
                r["aggregate"]: {k: v for k, v in r.items() if k not in ("method", "aggregate")}
                for r in found
                if r["method"] == row["method"]
            }
    return rows
