"""Learning from a run store (``influcoder distill-runs``): the glue between ``validate``'s
saved retraining runs and :func:`~influcoder.distillation.runs.train_on_runs`.

:func:`read_runs` turns a run store, the pool store the runs trained on and the query store
they measured into plain arrays (texts, each LDS subset run's membership over the pool, its
loss on every measured query); :func:`distill_runs` trains an encoder on them and saves it
with the runs it used recorded. Only the LDS subset runs are used: random subsets of one
size, the runs AirRep learns from (the removal runs are all near the full pool).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from influcoder.errors import StoreError
from influcoder.io.samples import Sample, encoder_text
from influcoder.io.stores import open_store


@dataclass
class RunsData:
    """A run store's LDS runs as arrays: ``members`` ``[R, n_pool]`` bool, ``losses`` ``[R,
    Q]`` over the measured ``queries`` (every evaluation set found whole in the query
    store, each sample once; ``columns``: their rows in that store), with where they came
    from."""

    store: object
    pool: list[Sample]
    queries: list[Sample]
    members: np.ndarray
    losses: np.ndarray
    series: dict
    columns: np.ndarray

    def card(self, split) -> dict:
        """The runs and queries an encoder was trained and judged on, for its card."""
        context = hashlib.sha256(self.store.context.encode()).hexdigest()
        return {
            "runs": {
                "store": str(self.store.path),
                "context_sha256": context,
                "pool_samples_sha256": self.store.manifest["pool"]["samples_sha256"],
                "series": self.series,
                "n": int(len(self.members)),
                "train": [int(i) for i in split.train_runs],
                "heldout": [int(i) for i in split.heldout_runs],
            },
            "queries": {
                "n": len(self.queries),
                "train_ids": [self.queries[j].id for j in split.train_queries],
                "heldout_ids": [self.queries[j].id for j in split.heldout_queries],
            },
        }


def read_runs(
    runs: str | os.PathLike,
    pool: str | os.PathLike,
    queries: str | os.PathLike,
    *,
    count: int | None = None,
    fraction: float | None = None,
    subset_seed: int | None = None,
) -> RunsData:
    """The LDS subset runs of ``runs`` (the series of ``fraction`` and ``subset_seed`` when the
    store holds several; the first ``count``) as arrays; ``pool`` must hold the samples the
    runs trained on and ``queries`` the samples of at least one evaluation set."""
    from influcoder.validation.runstore import open_runs
    from influcoder.validation.saved import measured_losses, measured_queries

    saved = open_runs(runs)
    pool_store, query_store = open_store(pool), open_store(queries)
    if pool_store.manifest["samples_sha256"] != saved.manifest["pool"]["samples_sha256"]:
        raise StoreError(
            f"{pool_store.path} holds other samples than the pool the runs of "
            f"{saved.path} trained on (manifest.json field pool.samples_sha256)"
        )
    cols, parts = measured_queries(saved, query_store.samples)
    if not len(cols):
        raise StoreError(
            f"{query_store.path}: holds none of the evaluation sets the runs of "
            f"{saved.path} measured; give the HELDOUT store of the validation"
        )
    subsets, by_set = saved.lds_runs(count=count, fraction=fraction, seed=subset_seed)
    members = np.zeros((len(subsets), pool_store.n), dtype=bool)
    for r, subset in enumerate(subsets):
        members[r, subset] = True
    losses = measured_losses(by_set, parts)
    return RunsData(
        store=saved,
        pool=list(pool_store.samples),
        queries=[query_store.samples[c] for c in cols],
        members=members,
        losses=losses,
        series={"fraction": fraction, "subset_seed": subset_seed, "count": len(subsets)},
        columns=cols,
    )


def distill_runs(
    data: RunsData,
    out: str | os.PathLike | None,
    args=None,
    *,
    encoder: str,
    progress: bool = True,
    judge: bool = True,
    device: str = "cpu",
):
    """Train ``encoder`` (a name or directory: the untrained encoder, or a gradient-distilled
    one to refine) on ``data``'s runs; save it to ``out`` (None: not saved) and return
    ``(the trained SentenceTransformer, RunsResult)``; ``judge``: as
    :func:`~influcoder.distillation.runs.train_on_runs` takes it. A multi-view encoder directory is
    refused: refining trains one sentence-transformers model (distill with ``--views text
    --head linear`` for one)."""
    from influcoder.distillation.run_settings import RunsArguments, heldout_mask
    from influcoder.distillation.runs import runs_card, save_runs_encoder, train_on_runs
    from influcoder.encoders.directory import load_encoder, resolve_encoder
    from influcoder.io.devices import resolve_device

    args = args or RunsArguments()
    model = load_encoder(encoder, device=str(resolve_device(device)))
    path = resolve_encoder(encoder)
    extra = {"base_encoder": encoder}
    result = train_on_runs(
        model,
        [encoder_text(s) for s in data.pool],
        [encoder_text(s) for s in data.queries],
        data.members,
        data.losses,
        args,
        out_dir=None,
        progress=progress,
        judge=judge,
        heldout=heldout_mask([s.meta for s in data.queries], args.heldout_where),
    )
    if out is not None:
        card = {**runs_card(model, args, result), **extra, **data.card(result.split)}
        save_runs_encoder(model, out, card, base_dir=path if os.path.isdir(path) else None)
        result.path = Path(out)
    return model, result
