"""Engines: where the embarrassingly parallel stages run.

``collect`` (gradients), ``encode`` and ``index`` (embeddings) all fill a store shard by
shard (the job protocol, :mod:`influcoder.io.job`), and a shard depends on its own rows alone.
An engine maps a *worker* over the missing shards and hands each finished shard back to the
driver, which writes it atomically into the store (so resuming, checking and atomic writes
stay in one place, and workers need no shared file system for their output).

* ``local`` (the default): one worker, in this process. Imports nothing beyond the stage.
* ``processes`` (:mod:`influcoder.engines.processes`, used by ``validate --workers N``): N
  worker processes of one thread each on this machine.
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
from typing import Any, Literal, Protocol, get_args

import numpy as np

EngineName = Literal["local", "ray"]
ENGINES: tuple[str, ...] = get_args(EngineName)

#: ``factory() -> worker``; ``worker(payload) -> rows`` (or ``(rows, norms)``, see
#: :func:`influcoder.io.job.fill_store`).
WorkerFactory = Callable[[], Callable[[Any], np.ndarray]]


class Engine(Protocol):
    name: str

    def map(
        self, factory: WorkerFactory, jobs: Iterable[tuple[int, Any]]
    ) -> Iterator[tuple[int, np.ndarray]]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc) -> None: ...


def get_engine(
    name: str = "local",
    *,
    address: str | None = None,
    num_workers: int | None = None,
    gpus_per_worker: int = 0,
) -> Engine:
    """The engine called ``name``; ``address`` (an existing Ray cluster, e.g. ``auto`` or
    ``ray://head:10001``), ``num_workers`` and ``gpus_per_worker`` (1 when the model runs on
    a GPU: one actor per GPU) apply to ``ray`` only."""
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {name!r}")
    if name == "local":
        if address is not None:
            raise ValueError("address (--ray-address) needs the ray engine (--engine ray)")
        from influcoder.engines.local import LocalEngine

        return LocalEngine()
    from influcoder.engines.ray import RayEngine

    return RayEngine(address=address, num_workers=num_workers, gpus_per_worker=gpus_per_worker)
