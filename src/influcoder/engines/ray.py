"""The Ray engine: shards computed by Ray actors, written by the driver.

Each actor builds its worker once (the model is loaded once per actor, not per shard) and
then computes the shards it is given; :class:`ray.util.ActorPool` keeps every actor busy and
returns shards as they finish. Shard payloads (texts or token ids) travel to the actors and
the finished rows travel back through Ray's object store; the driver writes each shard
atomically, so a run killed at any point resumes like a local one.

Plain Ray actors rather than Ray Data: the unit of work is already a store shard, and the
worker holds a model that must be loaded once per process.

The Ray instance: an existing connection (``ray.init`` called by the user) is used as it
is; otherwise ``address`` is passed to ``ray.init`` (``None`` starts a local instance for the
run and shuts it down afterwards; ``auto`` or ``ray://head:10001`` joins a cluster, whose
nodes must have influcoder installed and see the model files).

When the stage runs its model on a GPU (``--device``), each actor asks for one GPU, so there
is one actor per GPU and each sees only its own as ``cuda``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from influcoder.errors import InflucoderError, MissingPackageError

#: CPUs each actor asks Ray for (torch in the actor uses as many threads).
CPUS_PER_WORKER = 1


def actor_options(gpus_per_worker: int = 0) -> dict:
    """The resources each actor asks Ray for: one CPU, and ``gpus_per_worker`` GPUs (Ray then
    sets the actor's ``CUDA_VISIBLE_DEVICES``, so its ``cuda`` is its own GPU)."""
    if gpus_per_worker < 0:
        raise ValueError(f"gpus_per_worker must be >= 0, got {gpus_per_worker}")
    options = {"num_cpus": CPUS_PER_WORKER}
    if gpus_per_worker:
        options["num_gpus"] = gpus_per_worker
    return options


def worker_count(
    available: dict, n_jobs: int, num_workers: int | None = None, gpus_per_worker: int = 0
) -> int:
    """Actors to start: ``num_workers`` if given, else as many as the free CPUs (with GPUs:
    the free GPUs) allow; never more than there are jobs, never fewer than one."""
    if num_workers is not None:
        return max(1, min(num_workers, n_jobs))
    fits = int(available.get("CPU", 0) // CPUS_PER_WORKER)
    if gpus_per_worker:
        fits = min(fits, int(available.get("GPU", 0) // gpus_per_worker))
    return max(1, min(fits, n_jobs))


def check_gpus(cluster: dict, gpus_per_worker: int) -> None:
    """Refuse a GPU run on a Ray cluster without GPUs (its actors would wait for ever)."""
    if gpus_per_worker and cluster.get("GPU", 0) < gpus_per_worker:
        raise InflucoderError(
            f"the model runs on a GPU (--device), but the Ray cluster has "
            f"{int(cluster.get('GPU', 0))} GPU(s); use --device cpu or a "
            f"cluster with GPUs"
        )


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MissingPackageError(
            "ray", "The Ray engine (--engine ray)", install="pip install 'influcoder[ray]'"
        ) from None
    return ray


class _ShardWorker:
    """One actor: builds the worker on its first shard (so an error there surfaces as that
    shard's error), then computes shards."""

    def __init__(self, factory):
        self._factory = factory
        self._worker = None

    def run(self, job: tuple[int, Any]) -> tuple[int, np.ndarray]:
        k, payload = job
        if self._worker is None:
            self._worker = self._factory()
        return k, self._worker(payload)


class RayEngine:
    """Maps a worker over shards on Ray actors (see the module docstring)."""

    name = "ray"

    def __init__(
        self, address: str | None = None, num_workers: int | None = None, gpus_per_worker: int = 0
    ):
        if num_workers is not None and num_workers < 1:
            raise ValueError("num_workers must be >= 1")
        self.options = actor_options(gpus_per_worker)
        self.gpus_per_worker = gpus_per_worker
        self._ray = ray = _import_ray()
        self.num_workers = num_workers
        self._started = False
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, logging_level="WARNING")
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise InflucoderError(
                    f"could not start or join Ray (address {address!r}): {e}"
                ) from None
            self._started = True

    def _workers(self, n_jobs: int) -> int:
        return worker_count(
            self._ray.available_resources(), n_jobs, self.num_workers, self.gpus_per_worker
        )

    def map(self, factory, jobs: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, np.ndarray]]:
        from ray.exceptions import RayTaskError
        from ray.util import ActorPool

        ray = self._ray
        jobs = list(jobs)
        if not jobs:
            return
        check_gpus(ray.cluster_resources(), self.gpus_per_worker)
        actor = ray.remote(**self.options)(_ShardWorker)
        factory_ref = ray.put(factory)
        actors = [actor.remote(factory_ref) for _ in range(self._workers(len(jobs)))]
        try:
            pool = ActorPool(actors)
            yield from pool.map_unordered(lambda a, job: a.run.remote(job), jobs)
        except RayTaskError as e:
            # A user's mistake found by a worker (a model that changed, ...) reads as if it
            # had been found here.
            if isinstance(e.cause, InflucoderError):
                raise e.cause from None
            raise
        finally:
            for a in actors:
                ray.kill(a)

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
