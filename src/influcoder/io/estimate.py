"""What a store-filling job will cost before it runs (``--dry-run`` of collect, encode, index).

:func:`estimate_job` does what :func:`~influcoder.io.job.run_job` does up to the point where it
would write, with the real settings and data, then times a handful of rows on the real worker
and extrapolates; it never creates the output. The figures:

* **time** = the set-up as measured (reading, loading the model, tokenizing) + the fixed work a
  dry run skips and extrapolates (the stage says how much, e.g. the rest of collect's adapter
  warm-up, timed on its first steps) + the rows: seconds per token of the timed rows (which
  span the length distribution, shortest to longest, in the stage's own batches) times the
  data set's tokens. A stage without token counts is extrapolated per row.
* **peak memory** = this process's peak resident memory (and the accelerator's peak
  allocation on CUDA) after the set-up and the timed rows. Batches are bounded by the token
  budget and the longest row is among the timed ones, so the job's peak is the same, plus the
  data set itself held in memory (reported beside it).
* **storage** = rows x dimension x bytes per stored value + the samples file (exact: it is
  serialised as the store writes it) + the stage's own files (e.g. a FAISS index).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from influcoder.io.samples import load_samples

#: rows timed by a dry run (spread over the length distribution, the longest included)
DEFAULT_ESTIMATE_ROWS = 8

_BYTES = {"float32": 4, "float16": 2, "int8": 1}


@dataclass
class Estimate:
    """A job's expected cost; :meth:`lines` words it for people."""

    stage: str
    n: int
    timed: int
    setup_seconds: float
    row_seconds: float
    peak_rss_bytes: int
    data_bytes: int
    storage_bytes: int
    peak_accelerator_bytes: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return self.setup_seconds + self.row_seconds

    def lines(self) -> list[str]:
        lines = [
            (
                f"estimate for {self.stage} of {self.n:,} samples ({self.timed} timed on this "
                "machine, nothing written):"
            ),
            (
                f"  time     {_duration(self.total_seconds)}  (set-up "
                f"{_duration(self.setup_seconds)}, {self.row_seconds / max(self.n, 1):.3g} "
                "s/sample)"
            ),
            (
                f"  memory   {_size(self.peak_rss_bytes)} peak resident (+ the data set in "
                f"memory, about {_size(self.data_bytes)})"
            ),
        ]
        if self.peak_accelerator_bytes is not None:
            lines.append(f"  GPU      {_size(self.peak_accelerator_bytes)} peak allocated")
        lines.append(f"  storage  {_size(self.storage_bytes)}")
        return lines + [f"  note: {note}" for note in self.notes]

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "n": self.n,
            "timed": self.timed,
            "setup_seconds": self.setup_seconds,
            "row_seconds": self.row_seconds,
            "total_seconds": self.total_seconds,
            "peak_rss_bytes": self.peak_rss_bytes,
            "peak_accelerator_bytes": self.peak_accelerator_bytes,
            "data_bytes": self.data_bytes,
            "storage_bytes": self.storage_bytes,
            "notes": self.notes,
        }


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports kB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _accelerator_peak() -> int | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.max_memory_allocated())


def timed_rows(lengths, n: int, k: int, seed: int = 0) -> list[int]:
    """``k`` row indices spread over the length order (shortest and longest included), or,
    without lengths, ``k`` rows drawn at random."""
    k = min(k, n)
    if lengths is None:
        return sorted(np.random.default_rng(seed).choice(n, size=k, replace=False).tolist())
    order = sorted(range(n), key=lambda i: lengths[i])
    picks = np.linspace(0, n - 1, k).round().astype(int) if k > 1 else [n - 1]
    return sorted({order[i] for i in picks})


def estimate_job(
    job,
    data,
    out: str | os.PathLike,
    *,
    fields=None,
    limit: int | None = None,
    rows: int = DEFAULT_ESTIMATE_ROWS,
    extra_storage=None,
) -> Estimate:
    """Estimate ``job`` (a :class:`~influcoder.io.job.StoreJob` with ``dry_run`` set) on
    ``data``; ``out`` is only read (a store being resumed lends its adapter, as in a real
    run). ``extra_storage(n, dim)`` adds the bytes of the stage's own files."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    start = time.perf_counter()
    samples = data if isinstance(data, list) else load_samples(data, fields=fields, limit=limit)
    source = "<samples>" if isinstance(data, list) else str(data)
    plan = job.plan(samples, source, Path(out))
    n = len(samples)
    lengths = list(plan.lengths()) if plan.lengths is not None else None
    chosen = timed_rows(lengths, n, rows)
    worker = plan.local()
    payload = [x for i in chosen for x in plan.payload(i, i + 1)]
    worker(payload[:1])  # one-time costs (tables, kernels) not extrapolated
    setup = time.perf_counter() - start + job.skipped_seconds
    t = time.perf_counter()
    worker(payload)
    seconds = time.perf_counter() - t
    if lengths is not None:
        row_seconds = seconds / sum(lengths[i] for i in chosen) * sum(lengths)
    else:
        row_seconds = seconds / len(chosen) * n
    sample_lines = "".join(json.dumps(s.to_json(), ensure_ascii=False) + "\n" for s in samples)
    storage = (
        n * plan.dim * _BYTES[plan.dtype]
        + len(sample_lines.encode("utf-8"))
        + (extra_storage(n, plan.dim) if extra_storage else 0)
    )
    notes = list(job.estimate_notes)
    return Estimate(
        stage=job.desc,
        n=n,
        timed=len(chosen),
        setup_seconds=setup,
        row_seconds=row_seconds,
        peak_rss_bytes=peak_rss_bytes(),
        data_bytes=2 * len(sample_lines.encode("utf-8")),
        storage_bytes=storage,
        peak_accelerator_bytes=_accelerator_peak(),
        notes=notes,
    )
