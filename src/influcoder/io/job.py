"""The job protocol: how every store-filling stage (collect, encode, and index's segments) runs.

A stage that turns samples into one vector per sample is one :class:`StoreJob` subclass. It
says only what is particular to it, in :meth:`StoreJob.plan`: the setup that makes two of its
stores comparable, the vector size, the worker that computes a shard's rows (in this process,
and picklable for Ray), and what a worker needs for rows ``[start, stop)``. :func:`run_job`
does the rest, identically for every stage:

1. **resume check**: a store already at ``out`` may only be continued by the very same run
   (its recorded settings are compared with this run's; every difference is named);
2. **read** the samples (a bad input raises here, before anything is written);
3. **plan** (the stage loads its model; the setup is final);
4. **write**: create the store, or check the existing one's setup (:class:`StoreWriter`);
5. **fill**: map the worker over the missing shards on an engine (:mod:`influcoder.engines`),
   writing each shard atomically as it comes back, with a progress bar (rate, ETA);
6. **time**: the wall time of this run's shards, measured with :func:`time.perf_counter`
   (whatever the progress bar shows), is recorded in the manifest as ``seconds``.

A run killed at any moment and rerun skips the shards already written and ends with exactly
the vectors of an uninterrupted run (see :mod:`influcoder.io.stores`).
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from influcoder.engines import WorkerFactory
from influcoder.errors import StoreError
from influcoder.io.layout import MANIFEST_NAME
from influcoder.io.samples import Fields, Sample, load_samples
from influcoder.io.stores import Store, StoreWriter, check_resumable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckedWorker(ABC):
    """A worker factory for another process (picklable, for the Ray engine).

    It loads the stage's model from its own files there and refuses to run if what it finds
    is not what the driver fingerprinted, so every worker computes exactly the driver's rows.
    """

    fingerprint: str

    #: what is loaded, for the error message ("decoder", "encoder")
    what: ClassVar[str] = "model"

    @abstractmethod
    def load(self) -> tuple[str, Callable[[Any], np.ndarray]]:
        """Load the model here; return ``(its fingerprint, the worker)``."""

    def __call__(self) -> Callable[[Any], np.ndarray]:
        found, worker = self.load()
        if found != self.fingerprint:
            raise StoreError(
                f"the {self.what} on this worker has fingerprint {found}, the "
                f"driver's has {self.fingerprint}"
            )
        return worker


@dataclass
class Plan:
    """What a stage tells :func:`run_job` once its model is loaded."""

    setup: dict
    dim: int
    dtype: str
    shard_rows: int
    #: the worker factory run in this process (local engine): may share the driver's model
    local: WorkerFactory
    #: the worker factory for other processes (Ray): picklable, loads the model itself
    remote: Callable[[], WorkerFactory]
    #: ``payload(start, stop)``: what a worker needs for rows ``[start, stop)``
    payload: Callable[[int, int], Any]
    #: turns a worker's rows into the stored rows (e.g. int8 quantisation)
    convert: Callable[[np.ndarray], np.ndarray] | None = None
    #: files written into a new store before its manifest (e.g. the LoRA adapter)
    prepare: Callable[[Path], None] | None = None
    #: recorded in the manifest beside the arguments and the source
    provenance: dict = field(default_factory=dict)
    #: GPUs each Ray actor asks for (1 when the stage runs its model on a GPU)
    gpus_per_worker: int = 0
    #: ``lengths()``: tokens per row, for a dry run's estimate (:mod:`influcoder.io.estimate`)
    lengths: Callable[[], Sequence[int]] | None = None


class StoreJob(ABC):
    """One store-filling stage. Subclasses set the class attributes and :meth:`plan`."""

    #: the store kind this stage writes (``manifest["kind"]``)
    kind: ClassVar[str]
    #: the progress bar's label
    desc: ClassVar[str]
    #: past participle for messages ("collected", "encoded")
    made: ClassVar[str]
    #: the stage's settings dataclass (with ``to_dict``)
    settings: ClassVar[type]
    #: settings a resumed store may take from this run instead of its own (e.g. a renamed
    #: encoder directory whose fingerprint still matches)
    renamable: ClassVar[tuple[str, ...]] = ()

    #: a dry run (:mod:`influcoder.io.estimate`) may skip fixed work in :meth:`plan` and say
    #: here how many seconds a real run spends on it, with notes for the reader
    skipped_seconds: float = 0.0
    estimate_notes: tuple[str, ...] = ()

    def __init__(self, args, dry_run: bool = False):
        self.args, self.dry_run = args, dry_run

    @classmethod
    def settings_of(cls, store: Store, **overrides):
        """The settings an existing store of this stage was made with."""
        if store.kind != cls.kind:
            raise StoreError(f"{store.path}: holds {store.kind}, not {cls.kind}")
        return replace(cls.settings(**store.manifest["provenance"]["arguments"]), **overrides)

    @abstractmethod
    def plan(self, samples: Sequence[Sample], source: str, out: Path) -> Plan:
        """Load the stage's model and say how its store is made."""


def run_job(
    job: StoreJob,
    data,
    out: str | os.PathLike,
    *,
    fields: Fields | None = None,
    limit: int | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> Store:
    """Fill the store ``out`` with ``job``'s vectors of ``data`` (a path, ``-``, or a list of
    :class:`Sample`), creating or resuming it (see the module docstring)."""
    out = Path(out)
    if (out / MANIFEST_NAME).is_file():
        renamed = {name: getattr(job.args, name) for name in job.renamable}
        stored = job.settings_of(Store(out, allow_incomplete=True), **renamed)
        check_resumable(out, stored.to_dict(), job.args.to_dict(), job.made)
    samples = data if isinstance(data, list) else load_samples(data, fields=fields, limit=limit)
    source = "<samples>" if isinstance(data, list) else str(data)
    plan = job.plan(samples, source, out)
    writer = StoreWriter(
        out,
        kind=job.kind,
        setup=plan.setup,
        samples=samples,
        dim=plan.dim,
        dtype=plan.dtype,
        shard_rows=plan.shard_rows,
        prepare=plan.prepare,
        provenance={"arguments": job.args.to_dict(), "source": source, **plan.provenance},
    )
    factory = plan.local if engine == "local" else plan.remote()
    return fill_store(
        writer,
        factory,
        plan.payload,
        desc=job.desc,
        engine=engine,
        address=ray_address,
        num_workers=num_workers,
        convert=plan.convert,
        progress=progress,
        gpus_per_worker=plan.gpus_per_worker,
    )


def fill_store(
    writer: StoreWriter,
    factory: WorkerFactory,
    payload: Callable[[int, int], Any],
    *,
    desc: str,
    engine: str = "local",
    address: str | None = None,
    num_workers: int | None = None,
    convert: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: bool = True,
    gpus_per_worker: int = 0,
) -> Store:
    """Compute every missing shard of ``writer`` on ``engine`` and finish the store.

    A progress bar counts samples (rate and ETA), starting from those an earlier, interrupted
    run already wrote. The store records the wall time of this run's shards."""
    from tqdm.auto import tqdm

    from influcoder.engines import get_engine

    missing = writer.missing_shards()
    done = writer.n - writer.missing_rows()
    if done:
        logger.info("resuming %s: %d of %d samples already done", writer.path, done, writer.n)
    jobs = [(k, payload(*writer.shard_range(k))) for k in missing]
    bar = tqdm(
        total=writer.n,
        initial=done,
        unit="sample",
        desc=desc,
        disable=not progress,
        dynamic_ncols=True,
    )
    start = time.perf_counter()
    try:
        with get_engine(
            engine, address=address, num_workers=num_workers, gpus_per_worker=gpus_per_worker
        ) as runner:
            for k, rows in runner.map(factory, jobs):
                # a worker may return (rows, norms): each row's norm before normalisation
                rows, norms = rows if isinstance(rows, tuple) else (rows, None)
                writer.write_shard(k, rows if convert is None else convert(rows), norms)
                bar.update(len(rows))
    finally:
        bar.close()
    return writer.finish(seconds=time.perf_counter() - start)
