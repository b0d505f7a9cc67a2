"""Training the runs a validation still needs, one at a time or several at once.

:class:`RetrainFactory` is the picklable recipe of a worker (the model recipe, the pool and
evaluation samples, the training settings): ``factory()`` loads the model and returns a
callable that trains one run. :func:`execute` maps it over the runs missing from the run
store with an engine (:mod:`influcoder.engines`): here, in ``workers`` processes of one
thread each, or on Ray; every finished run is written to the store by this process the moment
it comes back, so a killed validation resumes from the runs saved. A run's losses depend on
its rows and seed alone, so every engine gives the same figures. :func:`makespan` predicts
the wall time of the runs on the workers for ``--dry-run``.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from influcoder.io.samples import Sample
from influcoder.validation.retrain import Recipe
from influcoder.validation.runstore import Run, RunStore
from influcoder.validation.settings import ValidateArguments

logger = logging.getLogger(__name__)


@dataclass
class RetrainFactory:
    """What a worker needs to train runs; ``factory()`` gives ``(keep, seed) -> row``, the
    row being ``[wall seconds, CPU seconds of the process, *losses of each evaluation set in
    order]``."""

    recipe: Recipe
    pool: list[Sample]
    eval_sets: dict[str, list[Sample]]
    args: ValidateArguments
    device: str = "cpu"
    adapter: str | None = None
    progress: bool = False

    def retrainer(self):
        from influcoder.io.devices import resolve_device
        from influcoder.validation.retrain import Retrainer

        return Retrainer(
            self.recipe,
            self.pool,
            self.eval_sets,
            self.args,
            device=resolve_device(self.device),
            progress=self.progress,
            adapter=self.adapter,
        )

    def __call__(self):
        retrainer = self.retrainer()
        names = list(self.eval_sets)

        def work(payload) -> np.ndarray:
            keep, seed = payload
            start, cpu = time.perf_counter(), time.process_time()
            losses = retrainer.run(list(keep), seed)
            return np.concatenate(
                [
                    [time.perf_counter() - start, time.process_time() - cpu],
                    *[losses[n] for n in names],
                ]
            )

        return work

    def split(self, row: np.ndarray) -> tuple[dict[str, np.ndarray], float, float]:
        """``(losses per evaluation set, wall seconds, CPU seconds)`` of a worker's row."""
        out, at = {}, 2
        for name, samples in self.eval_sets.items():
            out[name] = np.asarray(row[at : at + len(samples)], dtype=float)
            at += len(samples)
        return out, float(row[0]), float(row[1])


def get_retrain_engine(engine: str = "local", *, workers: int = 1, address: str | None = None):
    """The engine that trains the runs: ``local`` with ``workers`` > 1 is that many
    processes here; ``ray`` is Ray actors (``workers`` of them, default: one per free CPU)."""
    from influcoder.engines import get_engine

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if engine == "local" and workers > 1:
        if address is not None:
            raise ValueError("address (--ray-address) needs the ray engine (--engine ray)")
        from influcoder.engines.processes import ProcessEngine

        return ProcessEngine(workers)
    return get_engine(
        engine, address=address, num_workers=workers if engine == "ray" and workers > 1 else None
    )


def execute(
    runs: Sequence[Run],
    store: RunStore,
    factory: RetrainFactory,
    engine=None,
    *,
    progress: bool = True,
) -> dict[tuple, dict[str, np.ndarray]]:
    """Losses of every run, ``(keep, seed) -> {set: losses}``: the saved runs are read back,
    the others trained with ``engine`` (default: here, one at a time) and saved."""
    from tqdm.auto import tqdm

    from influcoder.engines.local import LocalEngine

    results, todo = {}, []
    for run in runs:
        if store.has(run):
            results[(run.keep, run.seed)] = store.read(run)
        else:
            todo.append(run)
    if not todo:
        if runs:
            logger.info(f"all {len(runs)} training runs already saved in {store.path}")
        return results
    logger.info(f"{len(todo)} training runs to do ({len(runs) - len(todo)} already saved)")
    engine = engine or LocalEngine()
    bar = tqdm(total=len(todo), desc="retraining", unit="run", disable=not progress)
    spent, done = 0.0, 0
    with engine:
        jobs = [(k, (run.keep, run.seed)) for k, run in enumerate(todo)]
        for k, row in engine.map(factory, jobs):
            losses, seconds, cpu = factory.split(row)
            store.write(todo[k], losses, seconds, cpu)
            results[(todo[k].keep, todo[k].seed)] = losses
            spent, done = spent + seconds, done + 1
            bar.update(1)
            bar.set_postfix_str(f"{spent / done:.0f} s a run")
    bar.close()
    return results


def makespan(durations: Sequence[float], workers: int) -> float:
    """Wall time of jobs of these durations, each given in order to the first free worker."""
    free = [0.0] * max(1, workers)
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def predict(todo: Sequence[Run], retrainer, workers: int) -> tuple[int, float, float, float]:
    """``(optimiser steps, seconds per step, seconds per evaluation, expected wall time)`` of
    the runs ``todo`` on ``workers`` workers, from two timed steps of ``retrainer``."""
    steps = [retrainer.steps(len(run.keep)) if run.keep else 0 for run in todo]
    per_step, per_eval = retrainer.time_step()
    return (
        sum(steps),
        per_step,
        per_eval,
        makespan([s * per_step + per_eval for s in steps], workers),
    )
