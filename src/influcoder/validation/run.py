"""A validation run: score the methods, plan the retraining runs, run them resumably, sum up.

:func:`validate` is the one place that chains the stage. It scores every method (the gradient
ground truth, encoders, text baselines, as ``influcoder evaluate`` does) on the pool against
the *target* queries, removes each method's top share of the pool, retrains the adapter
without it for every seed, and compares held-out losses with the full pool's
(:mod:`influcoder.validation.effects`). With ``lds_subsets``, it also trains on random halves
of the pool and computes each method's LDS on the held-out queries.

Each training run is saved as ``OUT/runs/<key>.json`` the moment it ends, written atomically;
the key is a digest of everything that decides its losses (the model recipe, the training
settings, the evaluation samples, the kept pool samples and the seed). A killed validation
rerun with the same command skips the runs already saved and ends with the same figures;
changing a setting changes the keys, so nothing stale is ever reused. Two methods that remove
the same samples share one run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from influcoder.io.atomic import atomic_write_json
from influcoder.io.samples import Sample
from influcoder.io.stores import Store, samples_digest
from influcoder.validation.effects import lds, lds_subsets, removal_effect, removal_set
from influcoder.validation.retrain import Recipe
from influcoder.validation.settings import ValidateArguments

logger = logging.getLogger(__name__)

RUNS_DIR = "runs"
#: The evaluation sets every run measures.
HELDOUT, CONTROL = "heldout", "control"


@dataclass(frozen=True)
class Run:
    """One training run: the pool samples kept and the seed."""

    label: str
    keep: tuple[int, ...]
    seed: int

    def key(self, context: str) -> str:
        text = json.dumps([context, self.keep, self.seed])
        return hashlib.sha256(text.encode()).hexdigest()[:20]


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


def _context(recipe: Recipe, args: ValidateArguments, eval_sets: Mapping[str, Sequence[Sample]],
             pool: Store) -> str:
    training = {k: v for k, v in asdict(args).items()
                if k in ("epochs", "lr", "batch_size", "batch_tokens")}
    return json.dumps({"recipe": asdict(recipe), "training": training,
                       "pool": pool.manifest["samples_sha256"],
                       "eval": {k: samples_digest(v) for k, v in eval_sets.items()}},
                      sort_keys=True)


def _without(n_pool: int, rows) -> tuple[int, ...]:
    """The pool indices left once ``rows`` are removed, in order."""
    gone = {int(r) for r in rows}
    return tuple(i for i in range(n_pool) if i not in gone)


def plan_runs(n_pool: int, removed: Mapping[str, np.ndarray], args: ValidateArguments
              ) -> tuple[list[Run], list[np.ndarray]]:
    """The runs a validation needs (repeats dropped) and the LDS subsets."""
    everything = tuple(range(n_pool))
    runs = []
    for seed in args.seeds:
        runs.append(Run("full", everything, seed))
        runs += [Run(f"without {method}'s top", _without(n_pool, rows), seed)
                 for method, rows in removed.items()]
    subsets = (lds_subsets(n_pool, args.lds_subsets, args.lds_fraction, args.lds_seed)
               if args.lds_subsets else [])
    runs += [Run(f"LDS subset {m}", tuple(int(i) for i in s), args.seeds[0])
             for m, s in enumerate(subsets)]
    unique = list({(r.keep, r.seed): r for r in runs}.values())
    return unique, subsets


def _plan(pool: Store, targets_scores: Mapping[str, np.ndarray],
          eval_sets: Mapping[str, Sequence[Sample]], args: ValidateArguments, recipe: Recipe):
    """``(removed, runs, LDS subsets, context)``: what each method removes, the runs that
    needs and the context of their keys."""
    removed = {m: removal_set(s, args.fraction, args.aggregate) for m, s in targets_scores.items()}
    runs, subsets = plan_runs(pool.n, removed, args)
    return removed, runs, subsets, _context(recipe, args, eval_sets, pool)


def saved_runs(runs: Sequence[Run], out: Path, context: str
               ) -> tuple[dict[tuple, dict[str, np.ndarray]], list[tuple[Run, Path]]]:
    """``(losses of the runs saved under out/runs, [(run, its path) still to train])``."""
    folder = out / RUNS_DIR
    results, todo = {}, []
    for run in runs:
        path = folder / f"{run.key(context)}.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            results[(run.keep, run.seed)] = {k: np.asarray(v) for k, v in saved["losses"].items()}
        else:
            todo.append((run, path))
    return results, todo


def estimate(pool: Store, targets_scores: Mapping[str, np.ndarray],
             eval_sets: Mapping[str, Sequence[Sample]], out: str | os.PathLike,
             args: ValidateArguments, retrainer_factory, *, recipe: Recipe) -> list[str]:
    """What a validation would cost here, as lines to print: the runs (and how many are saved
    already), their optimiser steps, and the time from two timed steps. Writes nothing."""
    from influcoder.io.tables import format_seconds

    _, runs, _, context = _plan(pool, targets_scores, eval_sets, args, recipe)
    _, todo = saved_runs(runs, Path(out), context)
    lines = [f"{len(runs)} training runs ({len(runs) - len(todo)} already saved in {out})"]
    if not todo:
        return lines + ["nothing to train: the command would only write the results"]
    retrainer = retrainer_factory()
    steps = sum(retrainer.steps(len(run.keep)) for run, _ in todo)
    per_step, per_eval = retrainer.time_step()
    total = steps * per_step + len(todo) * per_eval
    timed = (f"a step took {per_step:.2f} s here, measuring every held-out and control loss "
             f"{per_eval:.2f} s")
    expected = (f"expected time: {format_seconds(total)} (the model's loading and the "
                "methods' scoring not counted)")
    planned = f"to train: {len(todo)} runs, {steps} optimiser steps of {args.batch_size} samples"
    return [*lines, planned, timed, expected]


def execute(runs: Sequence[Run], out: Path, context: str, retrainer_factory, *,
            progress: bool = True) -> dict[tuple, dict[str, np.ndarray]]:
    """Losses of every run, ``(keep, seed) -> {set: losses}``; runs saved under ``out/runs``
    are read back, the others trained (the model is loaded only if one is needed)."""
    from tqdm.auto import tqdm

    folder = out / RUNS_DIR
    results, todo = saved_runs(runs, out, context)
    if runs and not todo:
        logger.info(f"all {len(runs)} training runs already done in {folder}")
    if todo:
        logger.info(f"{len(todo)} training runs to do ({len(runs) - len(todo)} already done)")
        retrainer = retrainer_factory()
        folder.mkdir(parents=True, exist_ok=True)
        bar = tqdm(todo, desc="retraining", unit="run", disable=not progress)
        for run, path in bar:
            bar.set_postfix_str(f"{run.label}, seed {run.seed}")
            start = time.perf_counter()
            losses = retrainer.run(run.keep, run.seed)
            atomic_write_json(path, {"label": run.label, "seed": run.seed,
                                     "n_kept": len(run.keep),
                                     "seconds": time.perf_counter() - start,
                                     "keep": list(run.keep),
                                     "losses": {k: v.tolist() for k, v in losses.items()}})
            results[(run.keep, run.seed)] = losses
    return results


def validate(pool: Store, targets_scores: Mapping[str, np.ndarray],
             heldout_scores: Mapping[str, np.ndarray] | None,
             eval_sets: Mapping[str, Sequence[Sample]], out: str | os.PathLike,
             args: ValidateArguments, retrainer_factory, *, recipe: Recipe,
             labels: np.ndarray | None = None, progress: bool = True) -> Validation:
    """Run the counterfactual check (and LDS) and sum it up.

    Args:
        pool: the pool's gradient store (its samples are the training data).
        targets_scores: method -> ``[n_pool, n_targets]`` scores against the target queries
            (what each method removes).
        heldout_scores: method -> ``[n_pool, n_heldout]`` scores against the held-out queries
            (for LDS; None without LDS).
        eval_sets: ``heldout`` (the held-out target queries) and, optionally, ``control``
            samples whose losses each run measures.
        out: folder of the saved runs.
        retrainer_factory: builds the :class:`~influcoder.validation.retrain.Retrainer` when
            a run has to be trained.
        recipe: the model recipe (part of each run's key).
        labels: planted pool samples, to report how many of them each method removed.
    """
    start = time.perf_counter()
    out = Path(out)
    removed, runs, subsets, context = _plan(pool, targets_scores, eval_sets, args, recipe)
    results = execute(runs, out, context, retrainer_factory, progress=progress)
    everything = tuple(range(pool.n))
    full = {name: np.stack([results[(everything, s)][name] for s in args.seeds])
            for name in eval_sets}
    rows = []
    for method, rows_removed in removed.items():
        keep = _without(pool.n, rows_removed)
        row = {"method": method, "removed": len(rows_removed)}
        if labels is not None:
            row["planted_removed"] = int(labels[rows_removed].sum())
        for name in eval_sets:
            after = np.stack([results[(keep, s)][name] for s in args.seeds])
            effect = removal_effect(full[name], after, n_boot=args.n_boot, seed=args.lds_seed)
            row.update({f"{name}_full": float(full[name].mean()),
                        f"{name}_delta": effect["delta"], f"{name}_low": effect["low"],
                        f"{name}_high": effect["high"], f"{name}_relative": effect["relative"],
                        f"{name}_per_seed": effect["per_seed"]})
        if subsets and heldout_scores is not None:
            measured = np.stack([results[(tuple(int(i) for i in s), args.seeds[0])][HELDOUT]
                                 for s in subsets])
            score = lds(heldout_scores[method], subsets, measured, n_boot=args.n_boot,
                        seed=args.lds_seed)
            row.update({"lds": score["lds"], "lds_low": score["low"], "lds_high": score["high"]})
        rows.append(row)
    return Validation(rows=rows, removed={m: [int(i) for i in r] for m, r in removed.items()},
                      full_losses={k: v.tolist() for k, v in full.items()},
                      settings=asdict(args), seconds=time.perf_counter() - start)
