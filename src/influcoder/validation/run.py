"""A validation run: score the methods, plan the retraining runs, run them resumably, sum up.

:func:`validate` is the one place that chains the stage. It scores every method (the gradient
ground truth, encoders, text baselines, as ``influcoder evaluate`` does) on the pool against
the *target* queries, removes each method's top share of the pool, retrains the adapter
without it for every seed, and compares held-out losses with the full pool's
(:mod:`influcoder.validation.effects`). With ``lds_subsets``, it also trains on random halves
of the pool and computes each method's LDS on the held-out queries, overall and per kind
(:mod:`influcoder.validation.saved`). It measures the untrained start too, and warns when the
instrument is blunt: the full-pool model did not learn the held-out queries, or a random
removal moves their loss about as much as the best method's.

The runs live in a run store, ``OUT/runs`` (:mod:`influcoder.validation.runstore`), saved
the moment each ends and trained by :mod:`influcoder.validation.execute` (here, in parallel
processes or on Ray). A killed validation rerun with the same command skips the runs already
saved and ends with the same figures. Two methods that remove the same samples share one run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from influcoder.errors import StoreError
from influcoder.io.layout import ADAPTER_DIR
from influcoder.io.samples import Sample
from influcoder.io.stores import Store
from influcoder.validation.effects import (
    lds_subsets,
    mean_interval,
    removal_effect,
    removal_set,
)
from influcoder.validation.retrain import Recipe
from influcoder.validation.runstore import (
    FULL_LABEL,
    LDS_LABEL,
    START_LABEL,
    TRAINING_FIELDS,
    Run,
    RunStore,
    without,
)
from influcoder.validation.settings import ValidateArguments

logger = logging.getLogger(__name__)


RUNS_DIR = "runs"
#: The evaluation sets every run measures.
HELDOUT, CONTROL = "heldout", "control"


@dataclass
class Validation:
    """What :func:`validate` found."""

    #: one row per method: removal effects on held-out and control losses, LDS
    rows: list[dict]
    #: method -> indices of the pool samples it removed
    removed: dict[str, list[int]]
    #: name -> per-sample losses of the full-pool runs, ``[seeds, samples]``
    full_losses: dict[str, list]
    settings: dict
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: name -> per-sample losses of the untrained start
    start_losses: dict[str, list] = field(default_factory=dict)
    #: why the figures may not rank the methods (see :func:`instrument_warnings`)
    warnings: list[str] = field(default_factory=list)
    #: method -> ids of the pool samples it removed (as :attr:`removed`)
    removed_ids: dict[str, list[str]] = field(default_factory=dict)


def plan_runs(
    n_pool: int, removed: Mapping[str, np.ndarray], args: ValidateArguments
) -> tuple[list[Run], list[np.ndarray]]:
    """The runs a validation needs (repeats dropped; the untrained start first) and the LDS
    subsets."""
    everything = tuple(range(n_pool))
    runs = [Run(START_LABEL, (), args.seeds[0])]
    for seed in args.seeds:
        runs.append(Run(FULL_LABEL, everything, seed))
        runs += [
            Run(f"without {method}'s top", without(n_pool, rows), seed)
            for method, rows in removed.items()
        ]
    subsets = (
        lds_subsets(n_pool, args.lds_subsets, args.lds_fraction, args.lds_seed)
        if args.lds_subsets
        else []
    )
    runs += [
        Run(
            f"{LDS_LABEL} {m}",
            tuple(int(i) for i in s),
            args.seeds[0],
            lds=(m, args.lds_fraction, args.lds_seed),
        )
        for m, s in enumerate(subsets)
    ]
    unique = list({(r.keep, r.seed): r for r in runs}.values())
    return unique, subsets


def warm_adapter(pool: Store, args: ValidateArguments) -> str | None:
    """The folder of the pool store's warmed-up adapter when runs start ``warm``."""
    if args.start != "warm":
        return None
    folder = pool.path / ADAPTER_DIR
    if not folder.is_dir():
        raise StoreError(
            f"{pool.path}: no {ADAPTER_DIR}/ folder, so no warmed-up adapter to "
            "start from; use --start fresh"
        )
    return str(folder)


def run_manifest(
    pool: Store, recipe: Recipe, args: ValidateArguments, eval_sets: Mapping[str, Sequence[Sample]]
) -> dict:
    """The manifest of the run store a validation of ``pool`` with ``args`` trains into."""
    training = {k: getattr(args, k) for k in TRAINING_FIELDS}
    return RunStore.build_manifest(
        recipe=recipe.record(),
        training=training,
        pool_ids=pool.ids,
        pool_digest=pool.manifest["samples_sha256"],
        eval_sets=eval_sets,
        start=args.start,
        adapter_sha256=pool.setup["adapter"].get("sha256") if args.start == "warm" else None,
    )


def _plan(pool, targets_scores, args):
    removed = {m: removal_set(s, args.fraction, args.aggregate) for m, s in targets_scores.items()}
    runs, subsets = plan_runs(pool.n, removed, args)
    if args.group_removal:  # one run without each group (validation/group_removal.py)
        from influcoder.validation.group_removal import group_runs, removal_groups

        groups = removal_groups(pool.samples, args.group_removal, args.group_min_size)
        runs += group_runs(pool.n, groups, args.group_removal, args.seeds[0])
        runs = list({(r.keep, r.seed): r for r in runs}.values())
    return removed, runs, subsets


def estimate(
    pool: Store,
    targets_scores: Mapping[str, np.ndarray],
    eval_sets: Mapping[str, Sequence[Sample]],
    out: str | os.PathLike,
    args: ValidateArguments,
    factory,
    *,
    recipe: Recipe,
    workers: int = 1,
    runs_dir: str | os.PathLike | None = None,
) -> list[str]:
    """What a validation would cost here, as lines to print: the runs (and how many are saved
    already), their optimiser steps, and the wall time on ``workers`` workers from two timed
    steps. Writes nothing."""
    from influcoder.io.tables import format_seconds
    from influcoder.validation.execute import predict

    _, runs, _ = _plan(pool, targets_scores, args)
    store = RunStore(runs_dir or Path(out) / RUNS_DIR, run_manifest(pool, recipe, args, eval_sets))
    todo = [r for r in runs if not store.has(r)]
    lines = [(f"{len(runs)} training runs ({len(runs) - len(todo)} already saved in {store.path})")]
    if not todo:
        return lines + ["nothing to train: the command would only write the results"]
    steps, per_step, per_eval, wall = predict(todo, factory.retrainer(), workers)
    timed = (
        f"a step took {per_step:.2f} s here, measuring every held-out and control loss "
        f"{per_eval:.2f} s"
    )
    expected = (
        f"expected time: {format_seconds(wall)} on {workers} worker(s) of one thread "
        "each, if each has a free core (the model's loading and the methods' scoring "
        "not counted)"
    )
    return [
        *lines,
        f"to train: {len(todo)} runs, {steps} optimiser steps of {args.batch_size} samples",
        timed,
        expected,
    ]


def instrument_warnings(
    rows: Sequence[dict],
    full: np.ndarray,
    start: np.ndarray,
    args: ValidateArguments,
    chance: str = "random",
) -> list[str]:
    """Why the figures may not rank the methods: the full-pool model did not clearly learn
    the held-out queries (the upper end of the 95% interval of its loss change from the
    untrained ``start`` is above ``-learned_fall`` of the start loss), or the ``chance``
    removal's effect lies within the interval of the best method's.

    Args:
        rows: the validation's rows (``heldout_delta``, ``heldout_low``, ``heldout_high``).
        full: ``[seeds, samples]`` held-out losses of the full-pool runs.
        start: ``[samples]`` held-out losses of the untrained start.
    """
    found = []
    change = np.asarray(full, float).mean(axis=0) - np.asarray(start, float)
    _, high = mean_interval(change, args.n_boot, args.lds_seed)
    base = float(np.mean(start))
    if high > -args.learned_fall * base:
        found.append(
            f"the full-pool model has not clearly learned the held-out queries: their "
            f"loss went from {base:.3f} untrained to {float(np.mean(full)):.3f} "
            f"(change {change.mean() / base:+.1%}, 95% interval up to "
            f"{high / base:+.1%}; wanted at most {-args.learned_fall:+.0%}); train "
            "longer or harder (--epochs, --lr, --start warm)"
        )
    by = {r["method"]: r for r in rows}
    others = [r for r in rows if r["method"] != chance]
    if chance in by and others:
        best = max(others, key=lambda r: r[f"{HELDOUT}_delta"])
        r = by[chance][f"{HELDOUT}_delta"]
        if best[f"{HELDOUT}_low"] <= r <= best[f"{HELDOUT}_high"]:
            found.append(
                f"the {chance} removal's effect {r:+.4f} lies within the interval of "
                f"the best method's ({best['method']}: {best[f'{HELDOUT}_delta']:+.4f}"
                f" [{best[f'{HELDOUT}_low']:+.4f}, {best[f'{HELDOUT}_high']:+.4f}]): "
                "the removal test cannot rank the methods here"
            )
    return found


def validate(
    pool: Store,
    targets_scores: Mapping[str, np.ndarray],
    query_scores: Mapping[str, np.ndarray] | None,
    queries: Sequence[Sample] | None,
    eval_sets: Mapping[str, Sequence[Sample]],
    out: str | os.PathLike,
    args: ValidateArguments,
    factory,
    *,
    recipe: Recipe,
    labels: np.ndarray | None = None,
    engine=None,
    by: str | None = None,
    runs_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> Validation:
    """Run the counterfactual check (and LDS) and sum it up.

    Args:
        pool: the pool's gradient store (its samples are the training data).
        targets_scores: method -> ``[n_pool, n_targets]`` scores against the target queries
            (what each method removes).
        query_scores: method -> ``[n_pool, len(queries)]`` scores against the held-out query
            store's samples (for LDS; None without LDS).
        queries: the held-out query store's samples (all of them, whatever set they are in).
        eval_sets: ``heldout`` (the held-out target queries) and, optionally, ``control``
            samples whose losses each run measures.
        out: the output folder; the runs go into the run store ``runs_dir`` (default
            ``out/runs``).
        factory: a :class:`~influcoder.validation.execute.RetrainFactory`.
        recipe: the model recipe (part of each run's key).
        labels: planted pool samples, to report how many of them each method removed.
        engine: where the runs are trained (default: here, one at a time).
        by: a query field to report LDS per value of (e.g. ``label``).
    """
    from influcoder.validation.execute import execute
    from influcoder.validation.saved import score_runs

    start = time.perf_counter()
    removed, runs, subsets = _plan(pool, targets_scores, args)
    store = RunStore.create(
        runs_dir or Path(out) / RUNS_DIR, run_manifest(pool, recipe, args, eval_sets)
    )
    results = execute(runs, store, factory, engine, progress=progress)
    everything = tuple(range(pool.n))
    full = {
        name: np.stack([results[(everything, s)][name] for s in args.seeds]) for name in eval_sets
    }
    untrained = results[((), args.seeds[0])]
    lds_rows = {}
    if subsets and query_scores is not None:
        lds_rows = {
            r["method"]: r
            for r in score_runs(
                store,
                query_scores,
                queries,
                by=by,
                count=len(subsets),
                fraction=args.lds_fraction,
                subset_seed=args.lds_seed,
                train_seed=args.seeds[0],
                n_boot=args.n_boot,
                seed=args.lds_seed,
            )
        }
    rows = []
    for method, rows_removed in removed.items():
        keep = without(pool.n, rows_removed)
        row = {"method": method, "removed": len(rows_removed)}
        if labels is not None:
            row["planted_removed"] = int(labels[rows_removed].sum())
        for name in eval_sets:
            after = np.stack([results[(keep, s)][name] for s in args.seeds])
            effect = removal_effect(full[name], after, n_boot=args.n_boot, seed=args.lds_seed)
            row.update(
                {
                    f"{name}_full": float(full[name].mean()),
                    f"{name}_delta": effect["delta"],
                    f"{name}_low": effect["low"],
                    f"{name}_high": effect["high"],
                    f"{name}_relative": effect["relative"],
                    f"{name}_per_seed": effect["per_seed"],
                    f"{name}_start": float(untrained[name].mean()),
                }
            )
        if method in lds_rows:
            row.update({k: v for k, v in lds_rows[method].items() if k != "method"})
        rows.append(row)
    return Validation(
        rows=rows,
        removed={m: [int(i) for i in r] for m, r in removed.items()},
        full_losses={k: v.tolist() for k, v in full.items()},
        settings=asdict(args),
        seconds=time.perf_counter() - start,
        start_losses={k: v.tolist() for k, v in untrained.items()},
        warnings=instrument_warnings(rows, full[HELDOUT], untrained[HELDOUT], args),
        removed_ids={m: [pool.ids[int(i)] for i in r] for m, r in removed.items()},
    )
