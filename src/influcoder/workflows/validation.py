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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from influcoder.errors import InputError
from influcoder.io.samples import Sample
from influcoder.io.stores import MANIFEST_NAME, Store, check_same_setup, open_store
from influcoder.validation.run import CONTROL, HELDOUT, Validation
from influcoder.validation.settings import ValidateArguments

logger = logging.getLogger(__name__)


def parse_where(where: str | None) -> tuple[str, str] | None:
    """``FIELD=VALUE`` -> ``(field, value)``."""
    if where is None:
        return None
    name, sep, value = where.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"expected FIELD=VALUE, got {where!r}")
    return name.strip(), value.strip()


def _matching(store: Store, where: tuple[str, str] | None) -> np.ndarray:
    """Boolean mask of the store's samples that meet ``where`` (all without one)."""
    samples = store.samples
    if where is None:
        return np.ones(len(samples), dtype=bool)
    name, value = where
    missing = [s.id for s in samples if name not in s.meta]
    if len(missing) == len(samples):
        raise InputError(f"no sample has the field '{name}'", path=str(store.path),
                         field=name)
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


def read_inputs(pool, targets, heldout, *, where=None, control=None, encoders=None,
                baselines=(), label_field=None, positive=None, model=None, device="cpu",
                seed: int = 0) -> Inputs:
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
    labels = (labels_from_samples(gt_pool.samples, label_field, positive)
              if label_field is not None else None)
    methods = {"encoders": dict(encoders or {}), "baselines": list(baselines),
               "seed": seed, "device": device}
    logger.info(f"scoring the methods on {gt_pool.n} pool x {int(target_rows.sum())} target "
                "queries")
    scored = score_methods(gt_pool, gt_targets, **methods)
    return Inputs(gt_pool, gt_targets, gt_heldout, recipe, target_rows, heldout_rows, eval_sets,
                  labels, {m: s[:, target_rows] for m, (s, _) in scored.items()}, methods)


def _retrainer(inputs: Inputs, args: ValidateArguments, device: str, progress: bool):
    from influcoder.io.devices import resolve_device
    from influcoder.validation.retrain import Retrainer

    return lambda: Retrainer(inputs.recipe, inputs.pool.samples, inputs.eval_sets, args,
                             device=resolve_device(device), progress=progress)


def estimate_validation(pool, targets, heldout, out, args: ValidateArguments, *,
                        device: str = "cpu", **named) -> list[str]:
    """``--dry-run``: the runs a validation needs and their expected time; writes nothing."""
    from influcoder.validation.run import estimate

    inputs = read_inputs(pool, targets, heldout, device=device, seed=args.lds_seed, **named)
    return estimate(inputs.pool, inputs.target_scores, inputs.eval_sets, out, args,
                    _retrainer(inputs, args, device, False), recipe=inputs.recipe)


def run_validation(pool: str | os.PathLike, targets: str | os.PathLike,
                   heldout: str | os.PathLike, out: str | os.PathLike,
                   args: ValidateArguments, *, device: str = "cpu", progress: bool = True,
                   **named) -> tuple[Validation, dict, Path]:
    """Validate the methods on stores; return ``(validation, context, report path)``.
    ``named``: the options of :func:`read_inputs`."""
    from influcoder.evaluation.evaluate import score_methods
    from influcoder.validation.report import write_validation
    from influcoder.validation.run import validate

    inputs = read_inputs(pool, targets, heldout, device=device, seed=args.lds_seed, **named)
    heldout_scores = None
    if args.lds_subsets:
        scored = score_methods(inputs.pool, inputs.heldout, **inputs.methods)
        heldout_scores = {m: s[:, inputs.heldout_rows] for m, (s, _) in scored.items()}
    validation = validate(inputs.pool, inputs.target_scores, heldout_scores, inputs.eval_sets,
                          out, args, _retrainer(inputs, args, device, progress),
                          recipe=inputs.recipe, labels=inputs.labels, progress=progress)
    validation.notes.append(
        "A removal's effect is the change in mean response loss of the held-out samples "
        "(the control samples) between the adapter trained without the removed samples and "
        "the one trained on the full pool with the same seed.")
    gt_pool, labels = inputs.pool, inputs.labels
    context = {"pool": str(gt_pool.path), "targets": str(inputs.targets.path),
               "heldout": str(inputs.heldout.path), "where": named.get("where"),
               "n_pool": gt_pool.n, "n_targets": int(inputs.target_rows.sum()),
               "n_heldout": len(inputs.eval_sets[HELDOUT]),
               "n_control": len(inputs.eval_sets.get(CONTROL, [])),
               "planted": None if labels is None else int(labels.sum()),
               "removed_ids": {m: [gt_pool.ids[i] for i in rows]
                               for m, rows in validation.removed.items()}}
    return validation, context, write_validation(out, validation, context=context)
