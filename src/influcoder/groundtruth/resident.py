"""A decoder kept loaded to take the gradients of new samples exactly as a store's were taken:
the vectors ``collect --like STORE`` would write, without a store, a temporary folder or a
decoder load per call. The server's and the Python API's query gradients use it: loading the
decoder costs seconds, a query's forward and backward pass a fraction of one.

The samples are cut into shards of the store's ``shard_rows`` and each shard into the same
token-budgeted batches as ``collect`` cuts them, and the rows are rounded to the store's
dtype, so the vectors are the bytes a store collected ``--like`` it holds.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from influcoder.groundtruth.collect import CollectJob
from influcoder.groundtruth.tokenize import tokenize_samples
from influcoder.io.devices import DEFAULT_DEVICE
from influcoder.io.samples import Sample
from influcoder.io.stores import DTYPES, Store, open_store


class ResidentCollector:
    """Gradients of new samples, taken like the gradient store ``like`` (its path or
    :class:`Store`): the same decoder (``model`` says where it is now, if it moved; its
    fingerprint is checked), adapter, LoRA modules, sketch, template and dtype.

    The decoder loads on the first call (or :meth:`load`) and stays; calls are serialised, as
    one decoder takes one backward pass at a time.
    """

    def __init__(
        self,
        like: Store | str | os.PathLike,
        *,
        model: str | None = None,
        device: str = DEFAULT_DEVICE,
    ):
        self.like = like if isinstance(like, Store) else open_store(like)
        self.model, self.device = model, device
        self._lock = threading.Lock()
        self._job = self._compute = None

    @property
    def dim(self) -> int:
        return self.like.dim

    def load(self) -> ResidentCollector:
        """Load the decoder and the store's adapter, checking them as ``collect --like``
        does (a different model or adapter is refused by name)."""
        with self._lock:
            if self._compute is None:
                overrides = {"model": self.model} if self.model else {}
                args = CollectJob.settings_of(self.like, **overrides)
                job = CollectJob(args, self.like, progress=False, device=self.device)
                with tempfile.TemporaryDirectory(prefix="influcoder-resident-") as tmp:
                    plan = job.plan([], "<none>", Path(tmp) / "store")  # writes nothing
                self._job, self._compute = job, plan.local()
        return self

    def vectors(self, samples: Sequence[Sample], source: str = "<queries>") -> np.ndarray:
        """``[n, dim]`` float32: the sketched, normalised gradient of each sample, as the
        store's dtype holds it. A sample the store's settings refuse (no response token left
        after truncation, say) raises before any gradient is taken; ``source`` names it."""
        self.load()
        args = self._job.args
        with self._lock:
            tokenized = tokenize_samples(
                self._job.tokenizer,
                list(samples),
                max_length=args.max_length,
                truncation=args.truncation,
                template=self._job.template,
                path=source,
            )
            out = np.empty((len(tokenized), self.dim), dtype=np.float32)
            for start in range(0, len(tokenized), args.shard_rows):
                rows, _ = self._compute(tokenized[start : start + args.shard_rows])
                out[start : start + len(rows)] = rows.astype(DTYPES[args.dtype])
        return out
