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
from collections.abc import Mapping, Sequence
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


def run_validation(pool: str | os.PathLike, targets: str | os.PathLike,
                   heldout: str | os.PathLike, out: str | os.PathLike,
                   args: ValidateArguments, *, where: str | None = None,
                   control: str | os.PathLike | None = None,
                   encoders: Mapping[str, str] | None = None, baselines: Sequence[str] = (),
                   label_field: str | None = None, positive: str | None = None,
                   model: str | None = None, device: str = "cpu",
                   progress: bool = True) -> tuple[Validation, dict, Path]:
    """Validate the methods on stores; return ``(validation, context, report path)``."""
    from influcoder.evaluation.evaluate import labels_from_samples, score_methods
    from influcoder.io.devices import resolve_device
    from influcoder.validation.report import write_validation
    from influcoder.validation.retrain import Recipe, Retrainer
    from influcoder.validation.run import validate

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
    named = {"encoders": dict(encoders or {}), "baselines": list(baselines)}
    logger.info(f"scoring the methods on {gt_pool.n} pool x {int(target_rows.sum())} target "
                "queries")
    scored = score_methods(gt_pool, gt_targets, seed=args.lds_seed, device=device, **named)
    target_scores = {m: s[:, target_rows] for m, (s, _) in scored.items()}
    heldout_scores = None
    if args.lds_subsets:
        scored = score_methods(gt_pool, gt_heldout, seed=args.lds_seed, device=device, **named)
        heldout_scores = {m: s[:, heldout_rows] for m, (s, _) in scored.items()}

    def retrainer():
        return Retrainer(recipe, gt_pool.samples, eval_sets, args, device=resolve_device(device),
                         progress=progress)

    validation = validate(gt_pool, target_scores, heldout_scores, eval_sets, out, args,
                          retrainer, recipe=recipe, labels=labels, progress=progress)
    validation.notes.append(
        "A removal's effect is the change in mean response loss of the held-out samples "
        "(the control samples) between the adapter trained without the removed samples and "
        "the one trained on the full pool with the same seed.")
    context = {"pool": str(gt_pool.path), "targets": str(gt_targets.path),
               "heldout": str(gt_heldout.path), "where": where,
               "n_pool": gt_pool.n, "n_targets": int(target_rows.sum()),
               "n_heldout": len(eval_sets[HELDOUT]), "n_control": len(eval_sets.get(CONTROL, [])),
               "planted": None if labels is None else int(labels.sum()),
               "removed_ids": {m: [gt_pool.ids[i] for i in rows]
                               for m, rows in validation.removed.items()}}
    return validation, context, write_validation(out, validation, context=context)
