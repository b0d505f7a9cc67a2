"""The micro-batcher alone: every item answered in order, and an item that fails fails only
its own future, not the others batched with it."""

from __future__ import annotations

import threading

import pytest

from influcoder.serve.batcher import Batcher


def test_a_failing_item_fails_only_itself():
    gate = threading.Event()
    batches = []

    def square(items):
        gate.wait(10)  # the first batch waits, so the rest queue up together
        batches.append(len(items))
        if any(i < 0 for i in items):
            raise ValueError(f"negative: {[i for i in items if i < 0]}")
        return [i * i for i in items]

    batcher = Batcher(square, max_batch=32, workers=1)
    try:
        items = [1, 2, -3, 4, 5, -6, 7]
        futures = [batcher.submit(i) for i in items]
        gate.set()
        for i, future in zip(items, futures):
            if i < 0:
                with pytest.raises(ValueError, match=f"negative: \\[{i}\\]"):
                    future.result(10)
            else:
                assert future.result(10) == i * i
        assert max(batches) > 1  # they were batched
    finally:
        batcher.close()
