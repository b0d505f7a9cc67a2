"""Micro-batching: requests that arrive together are answered by one call.

One query against a 100,000-sample pool costs a pass over 150 MB of vectors (the exact
scores that percentiles need) and one run of the encoder; both cost nearly the same for 32
queries as for one, because the pass becomes a matrix product and the encoder pads a batch
once. So queries are queued and each worker thread takes *everything waiting* (up to
``max_batch``) as one batch, without waiting for more to arrive: a lone request is answered
at once, and under load the batch grows by itself. Two workers run two batches at once, one
per core (numpy and ONNX Runtime release the GIL); ``max_batch`` keeps one worker from taking
everything while the other idles.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

_STOP = object()


class Batcher:
    """Runs ``fn(items) -> results`` (one result per item, in order) over queued items.

    ``submit`` returns a :class:`~concurrent.futures.Future` per item. When ``fn`` raises on a
    batch, each of its items is run again alone, so an item that fails fails only its own
    future: one bad request never fails the others queued with it. Each item's future also
    gets ``queued_s`` (seconds it waited) and ``batch_size`` attributes, for the timing
    header."""

    def __init__(
        self,
        fn: Callable[[Sequence], list],
        *,
        max_batch: int = 16,
        workers: int = 2,
        name: str = "influcoder-batch",
    ):
        if max_batch < 1 or workers < 1:
            raise ValueError("max_batch and workers must be >= 1")
        self.fn, self.max_batch = fn, max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, item) -> Future:
        future: Future = Future()
        self._queue.put((item, future, time.perf_counter()))
        return future

    def _take(self) -> list | None:
        first = self._queue.get()
        if first is _STOP:
            return None
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is _STOP:
                self._queue.put(_STOP)  # for this worker's next turn
                break
            batch.append(nxt)
        return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            start = time.perf_counter()
            for _, future, queued in batch:
                future.queued_s, future.batch_size = start - queued, len(batch)
            self._answer(batch)

    def _answer(self, batch: list) -> None:
        try:
            results = self.fn([item for item, _, _ in batch])
        except BaseException as e:  # noqa: BLE001 - handed to the waiting request
            if len(batch) == 1:
                batch[0][1].set_exception(e)
            else:  # find the items that fail: each alone
                for one in batch:
                    self._answer([one])
            return
        for (_, future, _), result in zip(batch, results):
            future.set_result(result)

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the workers once the queue is empty."""
        for _ in self._threads:
            self._queue.put(_STOP)
        for t in self._threads:
            t.join(timeout)
