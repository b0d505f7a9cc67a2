"""Engines: where the embarrassingly parallel stages run.

``collect`` (gradients), ``encode`` and ``index`` (embeddings) all fill a store shard by
shard, and a shard depends on its own rows alone. An engine maps a *worker* over the missing
shards and hands each finished shard back to the driver, which writes it atomically into the
store (so resuming, checking and atomic writes stay in one place, :mod:`influcoder.store`,
and workers need no shared file system for their output).

* ``local`` (the default): one worker, in this process. Imports nothing beyond the stage.
* ``ray``: one Ray actor per worker, on a local Ray instance started for the run or on an
  existing cluster (``address``). Needs ``pip install 'influcoder[ray]'``.

The contract, identical for both engines::

    with get_engine("ray", address="auto") as engine:
        for k, rows in engine.map(factory, [(k, payload), ...]):
            writer.write_shard(k, rows)

``factory()`` builds the worker (loads the model once per worker) and returns a callable
``payload -> np.ndarray``; for the ``ray`` engine it must be picklable and must not depend on
the driver's memory (it reloads the model from its files and checks their fingerprint).
Shards come back in completion order, not shard order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import numpy as np

ENGINES = ("local", "ray")

#: ``factory() -> worker``; ``worker(payload) -> rows``.
WorkerFactory = Callable[[], Callable[[Any], np.ndarray]]


class Engine(Protocol):
    name: str

    def map(self, factory: WorkerFactory, jobs: Iterable[tuple[int, Any]]
            ) -> Iterator[tuple[int, np.ndarray]]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Engine": ...

    def __exit__(self, *exc) -> None: ...


def get_engine(name: str = "local", *, address: str | None = None,
               num_workers: int | None = None) -> Engine:
    """The engine called ``name``; ``address`` (an existing Ray cluster, e.g. ``auto`` or
    ``ray://head:10001``) and ``num_workers`` apply to ``ray`` only."""
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {name!r}")
    if name == "local":
        if address is not None:
            raise ValueError("address (--ray-address) needs the ray engine (--engine ray)")
        from .local import LocalEngine

        return LocalEngine()
    from .ray import RayEngine

    return RayEngine(address=address, num_workers=num_workers)


def fill_store(writer, factory: WorkerFactory, payload: Callable[[int, int], Any], *, desc: str,
               engine: str = "local", address: str | None = None,
               num_workers: int | None = None, convert: Callable[[np.ndarray], np.ndarray] | None
               = None, progress: bool = True, log=print):
    """Compute every missing shard of ``writer`` on ``engine`` and finish the store.

    ``payload(start, stop)`` is what a worker needs for rows ``[start, stop)``; ``convert``
    turns a worker's rows into what is stored. A progress bar counts samples (rate and ETA),
    starting from those an earlier, interrupted run already wrote."""
    from tqdm.auto import tqdm

    missing = writer.missing_shards()
    done = writer.n - writer.missing_rows()
    if done:
        log(f"resuming {writer.path}: {done} of {writer.n} samples already done")
    jobs = [(k, payload(*writer.shard_range(k))) for k in missing]
    bar = tqdm(total=writer.n, initial=done, unit="sample", desc=desc, disable=not progress,
               dynamic_ncols=True)
    try:
        with get_engine(engine, address=address, num_workers=num_workers) as runner:
            for k, rows in runner.map(factory, jobs):
                writer.write_shard(k, rows if convert is None else convert(rows))
                bar.update(len(rows))
    finally:
        bar.close()
    return writer.finish(seconds=bar.format_dict.get("elapsed"))
