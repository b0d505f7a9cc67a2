"""The processes engine: jobs run by N worker processes on this machine.

Each process is started fresh (``spawn``), uses one thread for torch and OpenMP (N processes
share the machine's cores), builds its worker once with ``factory()`` and then computes the
jobs it is given. Results come back in completion order, like the Ray engine's; the factory
and the payloads travel to the processes by pickling (in memory, never to disk), so the
factory must be picklable and must not depend on the driver's memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

_WORKER = None


def _start(factory) -> None:
    """A worker process's initialiser: one thread, then the worker."""
    global _WORKER
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"
    import torch

    torch.set_num_threads(1)
    _WORKER = factory()


def _call(job: tuple[int, Any]) -> tuple[int, np.ndarray]:
    k, payload = job
    return k, _WORKER(payload)


class ProcessEngine:
    """Maps a worker over jobs in ``num_workers`` processes (see the module docstring)."""

    name = "processes"

    def __init__(self, num_workers: int):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers = num_workers

    def map(self, factory, jobs: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, np.ndarray]]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        jobs = list(jobs)
        if not jobs:
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            min(self.num_workers, len(jobs)),
            mp_context=context,
            initializer=_start,
            initargs=(factory,),
        ) as pool:
            pending = {pool.submit(_call, job) for job in jobs}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            finally:
                for future in pending:
                    future.cancel()

    def close(self) -> None:
        """Nothing to release: the processes end with each map."""

    def __enter__(self) -> ProcessEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
