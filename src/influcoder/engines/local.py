"""The default engine: one worker, in this process, shards in order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


class LocalEngine:
    """Runs ``factory()`` once here and then every job through it, in the order given."""

    name = "local"

    def map(self, factory, jobs: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, np.ndarray]]:
        worker = None
        for k, payload in jobs:
            if worker is None:
                worker = factory()
            yield k, worker(payload)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
