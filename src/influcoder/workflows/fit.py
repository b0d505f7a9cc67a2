"""``fit``: one command from a training file to a served index.

The stages, each writing one folder of the fit directory and each resumable on its own:

1. ``grad_pool``: gradients (``collect``) of a seeded sample of the training file;
2. ``grad_queries``: gradients of the outputs to explain, ``like`` the pool;
3. ``encoder``: an encoder distilled from the two (``distill``);
4. ``index``: every sample of the training file, embedded by that encoder (``index``).

``fit.json`` records the settings, the inputs' digests and the finished stages. A rerun of
the same command skips the finished stages and resumes the unfinished one; other settings or
other data are refused, naming the option (:mod:`influcoder.workflows.fit_plan`). The inputs
are read and checked before anything is written, and a first run that fails on the user's
input leaves no folder behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from influcoder.errors import InflucoderError, InputError, StoreError
from influcoder.io.samples import Fields
from influcoder.workflows.fit_plan import (
    ENCODER,
    FIT_FILE,
    INDEX,
    POOL,
    QUERIES,
    STAGES,
    TITLES,
    FitArguments,
    FitPlan,
    plan_fit,
)
from influcoder.workflows.fit_progress import (
    FitProgress,
    collect_units,
    distill_steps,
    distill_units,
    encode_units,
)

logger = logging.getLogger(__name__)


def fit(
    train: str | os.PathLike,
    queries: str | os.PathLike,
    out: str | os.PathLike,
    args: FitArguments | None = None,
    *,
    fields: Fields | None = None,
    limit: int | None = None,
    progress: bool = True,
    device: str = "auto",
) -> Path:
    """Run (or resume) every stage of a fit into ``out``; returns the index's directory.

    Example::

        >>> index = fit("train.jsonl", "outputs.jsonl", "runs/fit")
    """
    plan = plan_fit(train, queries, out, args, fields=fields, limit=limit, device=device)
    created, fresh = not plan.out.exists(), not plan.done and not plan.manifest["stages"]
    _write_manifest(plan)
    bar = FitProgress([(s, _units(s, plan), s in plan.done) for s in STAGES], enabled=progress)
    try:
        for stage in STAGES:
            if stage in plan.done:
                logger.info(f"{TITLES[stage]}: already done ({plan.path(stage)})")
                continue
            bar.start(stage, TITLES[stage])
            start = time.perf_counter()
            _run_stage(stage, plan, progress, device)
            seconds = time.perf_counter() - start
            bar.finish(stage, seconds)
            plan.manifest["stages"][stage] = {"done": True, "seconds": round(seconds, 3)}
            plan.done.append(stage)
            _write_manifest(plan)
    except InflucoderError:
        # a first run stopped by the user's input before any stage wrote: leave nothing
        if fresh and not any(plan.path(s).exists() for s in STAGES):
            (plan.out / FIT_FILE).unlink(missing_ok=True)
            if created:
                shutil.rmtree(plan.out, ignore_errors=True)
        raise
    finally:
        bar.close()
    return plan.path(INDEX)


def _units(stage: str, plan: FitPlan) -> float:
    """A stage's expected cost, for the overall ETA (:mod:`~influcoder.workflows.fit_progress`)."""
    k, q = len(plan.pool_samples), len(plan.query_samples)
    return {
        POOL: lambda: collect_units(plan.args.collect, k, warmup=True),
        QUERIES: lambda: collect_units(plan.args.collect, q, warmup=False),
        ENCODER: lambda: distill_units(plan.args.distill, k, q),
        INDEX: lambda: encode_units(len(plan.train_samples)),
    }[stage]()


def _write_manifest(plan: FitPlan) -> None:
    from influcoder.io.atomic import atomic_write_json

    plan.out.mkdir(parents=True, exist_ok=True)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    plan.manifest.setdefault("created", now)
    plan.manifest["updated"] = now
    atomic_write_json(plan.out / FIT_FILE, plan.manifest)


def _run_stage(stage: str, plan: FitPlan, progress: bool, device: str) -> None:
    """Run one stage; a bad sample the collect stages find is reported in its own file."""
    try:
        _stage(stage, plan, progress, device)
    except InputError as e:
        if e.path != "<samples>":
            raise
        raise InputError(
            e.reason, path=plan.train if stage == POOL else plan.queries, field=e.field
        ) from None


def _stage(stage: str, plan: FitPlan, progress: bool, device: str) -> None:
    args = plan.args
    if stage == POOL:
        from influcoder.groundtruth.collect import collect

        collect(plan.pool_samples, plan.path(POOL), args.collect, progress=progress, device=device)
    elif stage == QUERIES:
        from influcoder.groundtruth.collect import collect

        collect(
            plan.query_samples,
            plan.path(QUERIES),
            like=plan.path(POOL),
            progress=progress,
            device=device,
        )
    elif stage == ENCODER:
        from influcoder.distillation.stores import distill_stores
        from influcoder.io.stores import open_store

        distill_stores(
            open_store(plan.path(POOL)),
            open_store(plan.path(QUERIES)),
            plan.path(ENCODER),
            args.distill,
            encoder=args.encoder,
            progress=progress,
            device=device,
        )
    else:
        from influcoder.attribution.build import build_index

        build_index(
            plan.train,
            plan.path(INDEX),
            str(plan.path(ENCODER)),
            approx=args.approx,
            fields=plan.fields,
            limit=plan.limit,
            progress=progress,
            device=device,
        )


def estimate_fit(plan: FitPlan, device: str = "auto") -> list[str]:
    """The plan and what it will cost (``fit --dry-run``): the stages, the sample, and the
    estimates of ``collect --dry-run`` and ``index --dry-run``; nothing is written."""
    from influcoder.attribution.build import estimate_index
    from influcoder.groundtruth.collect import estimate_collect

    lines = plan.lines()
    todo = [s for s in STAGES if s not in plan.done]
    if POOL in todo or QUERIES in todo:
        est = estimate_collect(plan.pool_samples, plan.path(POOL), plan.args.collect, device=device)
        per_sample = est.row_seconds / max(est.n, 1)
        if POOL in todo:
            lines += ["", *est.lines()]
        if QUERIES in todo:
            q = len(plan.query_samples)
            lines += [
                "",
                f"estimate for collect of the {q:,} queries: about "
                f"{per_sample * q:.3g} s (the training sample's time per sample) "
                f"+ loading the model; storage about "
                f"{est.storage_bytes / max(est.n, 1) * q / 1e6:.3g} MB",
            ]
    if ENCODER in todo:
        steps = distill_steps(plan.args.distill, len(plan.pool_samples), len(plan.query_samples))
        lines += [
            "",
            f"distill: {plan.args.distill.epochs} epochs of {steps} "
            f"step{'s' if steps != 1 else ''} "
            f"({plan.args.distill.batch_pool} pool samples x "
            f"{plan.args.distill.batch_query} queries at most), then the head: not "
            f"timed (docs/DISTILLATION.md: about 6 s per step of 64 texts for "
            f"MiniLM on 2 CPU cores)",
        ]
    if INDEX in todo:
        encoder = str(plan.path(ENCODER)) if ENCODER in plan.done else plan.args.encoder
        est = estimate_index(
            plan.train,
            plan.path(INDEX),
            encoder,
            approx=plan.args.approx,
            fields=plan.fields,
            limit=plan.limit,
            device=device,
        )
        if ENCODER not in plan.done:
            est.notes.append(
                f"timed with {plan.args.encoder} before distillation; the "
                f"distilled encoder has the same backbone (its head may change "
                f"the dimension and so the storage)"
            )
        lines += ["", *est.lines()]
    return lines


def resolve_fit_dir(path: str | os.PathLike) -> dict[str, Path] | None:
    """For a fit directory, its index, encoder and pool store (``serve DIR``); None for any
    other path."""
    path = Path(path)
    if not (path / FIT_FILE).is_file():
        return None
    if not (path / INDEX).is_dir():
        raise StoreError(
            f"{path}: the fit is not finished (no {INDEX}/); rerun its "
            f"`influcoder fit` command to finish it"
        )
    return {"index": path / INDEX, "encoder": path / ENCODER, "ground_truth": path / POOL}
