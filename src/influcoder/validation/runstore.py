"""Retraining runs as a store of their own: a folder with a manifest and one file per run.

A run store (``OUT/runs`` of ``influcoder validate``) holds::

    manifest.json     kind "runs": the retraining recipe (model recipe, epochs, lr, batch,
                      adapter start), the pool's ids and digest, each evaluation set's ids,
                      digest and sample fields (the kinds of its queries)
    <key>.json        one training run: the pool rows it kept, the seed, its wall and CPU time and
                      the mean response loss of every evaluation sample

A run's key is a digest of everything that decides its losses (the store's context, the kept
rows, the seed), so a run is trained once and read back ever after. Files are written
atomically: a run killed mid-write leaves no file, and the next command trains it again, to
the same losses. A run file that is there but unreadable (damaged outside influcoder) is
refused with its path and field. Any method is then scored against the saved runs without
retraining (:mod:`influcoder.validation.saved`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from influcoder.errors import StoreError
from influcoder.io.atomic import atomic_write_json
from influcoder.io.layout import MANIFEST_NAME
from influcoder.io.samples import Sample
from influcoder.io.stores import samples_digest, setup_differences

RUNS_FORMAT, RUNS_VERSION, RUNS_KIND = "influcoder-runs", 1, "runs"
#: Label prefix of the runs on random pool subsets (the LDS runs).
LDS_LABEL, START_LABEL, FULL_LABEL = "LDS subset", "start", "full"
TRAINING_FIELDS = ("epochs", "lr", "batch_size", "batch_tokens")


@dataclass(frozen=True)
class Run:
    """One training run: the pool samples kept and the seed. ``keep == ()`` is the start:
    the adapter measured before any training. ``lds`` is ``(index, fraction, subset seed)``
    for an LDS subset run."""

    label: str
    keep: tuple[int, ...]
    seed: int
    lds: tuple[int, float, int] | None = None

    def key(self, context: str) -> str:
        text = json.dumps([context, self.keep, self.seed])
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def without(n_pool: int, rows) -> tuple[int, ...]:
    """A run's ``keep``: the pool indices left once ``rows`` are removed, in order."""
    gone = {int(r) for r in rows}
    return tuple(i for i in range(n_pool) if i not in gone)


def context_of(
    recipe: Mapping, training: Mapping, pool_digest: str, eval_sets: Mapping[str, Sequence[Sample]]
) -> str:
    """The text every run key of a store starts from. ``training`` holds the epochs, lr,
    batch sizes, and the adapter start only when it is not ``fresh`` (so the keys of stores
    written before starts existed stay valid)."""
    return json.dumps(
        {
            "recipe": dict(recipe),
            "training": dict(training),
            "pool": pool_digest,
            "eval": {k: samples_digest(v) for k, v in eval_sets.items()},
        },
        sort_keys=True,
    )


def _fields(samples: Sequence[Sample]) -> dict[str, list]:
    """Each plain meta field of ``samples`` (str, int, bool), one value per sample."""
    names = sorted(
        {k for s in samples for k, v in s.meta.items() if isinstance(v, (str, int, bool))}
    )
    return {k: [s.meta.get(k) for s in samples] for k in names}


def _check(cond: bool, path: Path, field: str, what: str) -> None:
    if not cond:
        raise StoreError(f"{path}: field '{field}': {what}")


class RunStore:
    """A run store on disk. :meth:`create` opens or starts one for a validation;
    :func:`open_runs` opens an existing one read-only."""

    def __init__(self, path: str | os.PathLike, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self.context = manifest["context"]

    # -- creation and opening
    @staticmethod
    def build_manifest(
        *,
        recipe: Mapping,
        training: Mapping,
        pool_ids: Sequence[str],
        pool_digest: str,
        eval_sets: Mapping[str, Sequence[Sample]],
        start: str = "fresh",
        adapter_sha256: str | None = None,
    ) -> dict:
        keyed = (
            dict(training)
            if start == "fresh"
            else {**training, "start": start, "adapter_sha256": adapter_sha256}
        )
        return {
            "format": RUNS_FORMAT,
            "version": RUNS_VERSION,
            "kind": RUNS_KIND,
            "recipe": dict(recipe),
            "training": {**training, "start": start},
            "adapter_sha256": adapter_sha256,
            "pool": {"n": len(pool_ids), "ids": list(pool_ids), "samples_sha256": pool_digest},
            "eval": {
                name: {
                    "n": len(s),
                    "ids": [x.id for x in s],
                    "samples_sha256": samples_digest(s),
                    "fields": _fields(s),
                }
                for name, s in eval_sets.items()
            },
            "context": context_of(recipe, keyed, pool_digest, eval_sets),
        }

    @classmethod
    def create(cls, path: str | os.PathLike, manifest: dict) -> RunStore:
        """The store at ``path`` for ``manifest``: written if new (also into a folder of runs
        saved before run stores had a manifest: their keys are the same); refused, naming
        each difference, if it holds runs of another recipe or other samples."""
        path = Path(path)
        mpath = path / MANIFEST_NAME
        if mpath.is_file():
            stored = open_runs(path).manifest
            mine = {k: v for k, v in manifest.items() if k != "context"}
            theirs = {k: v for k, v in stored.items() if k != "context"}
            diffs = setup_differences(_short(theirs), _short(mine))
            if diffs or stored["context"] != manifest["context"]:
                raise StoreError(
                    f"{path} holds training runs of another recipe or other "
                    "samples (stored vs requested):\n  "
                    + "\n  ".join(diffs)
                    + "\nRerun with the same options, or choose another --out "
                    "(or --runs)."
                )
            return cls(path, stored)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(mpath, manifest)
        return cls(path, manifest)

    # -- runs
    def run_path(self, run: Run) -> Path:
        return self.path / f"{run.key(self.context)}.json"

    def has(self, run: Run) -> bool:
        return self.run_path(run).is_file()

    def write(
        self,
        run: Run,
        losses: Mapping[str, np.ndarray],
        seconds: float,
        cpu_seconds: float | None = None,
    ) -> None:
        record = {
            "label": run.label,
            "seed": run.seed,
            "n_kept": len(run.keep),
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "keep": list(run.keep),
            "losses": {k: np.asarray(v, float).tolist() for k, v in losses.items()},
        }
        if run.lds is not None:
            record["lds"] = {"index": run.lds[0], "fraction": run.lds[1], "seed": run.lds[2]}
        atomic_write_json(self.run_path(run), record)

    def read_file(self, path: Path) -> dict:
        """A run file, checked field by field against the manifest."""
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreError(
                f"{path}: corrupt run file ({e}); delete it and rerun the "
                "validation to train that run again"
            ) from None
        _check(isinstance(record, dict), path, "(top level)", "not a JSON object")
        for name in ("seed", "keep", "losses"):
            _check(name in record, path, name, "missing")
        n_pool = self.manifest["pool"]["n"]
        keep = record["keep"]
        _check(
            isinstance(keep, list) and all(isinstance(i, int) and 0 <= i < n_pool for i in keep),
            path,
            "keep",
            f"must be a list of pool rows in [0, {n_pool})",
        )
        _check(isinstance(record["seed"], int), path, "seed", "must be an integer")
        losses = record["losses"]
        _check(isinstance(losses, dict), path, "losses", "must be an object")
        out = {}
        for name, info in self.manifest["eval"].items():
            values = losses.get(name)
            _check(
                isinstance(values, list) and len(values) == info["n"],
                path,
                f"losses.{name}",
                f"must be a list of {info['n']} losses",
            )
            _check(
                all(isinstance(v, (int, float)) and math.isfinite(v) for v in values),
                path,
                f"losses.{name}",
                "must hold finite numbers",
            )
            out[name] = np.asarray(values, dtype=float)
        return {**record, "losses": out}

    def read(self, run: Run) -> dict[str, np.ndarray]:
        """The losses of a saved ``run`` (its file must be there and be that run). An LDS run
        saved before run files said so (older validate outputs) is rewritten saying so."""
        path = self.run_path(run)
        record = self.read_file(path)
        _check(
            tuple(record["keep"]) == run.keep and record["seed"] == run.seed,
            path,
            "keep",
            "the run file is not the run its name says; delete it and rerun",
        )
        if run.lds is not None and "lds" not in record:
            self.write(
                run, record["losses"], float(record.get("seconds", 0.0)), record.get("cpu_seconds")
            )
        return record["losses"]

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.glob("*.json") if p.name != MANIFEST_NAME)

    def lds_runs(
        self,
        *,
        fraction: float | None = None,
        seed: int | None = None,
        count: int | None = None,
        train_seed: int | None = None,
    ) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        """The saved LDS subset runs of one series (subset fraction and seed; needed only
        when the store holds several), in subset order: ``(subsets, name -> [subsets,
        samples] losses)``; the first ``count`` subsets if given. A gap in the series (a
        subset not trained) ends it there."""
        series: dict[tuple, dict[int, dict]] = {}
        for path in self.files():
            record = self.read_file(path)
            info = record.get("lds")
            if info is not None:
                series.setdefault((info["fraction"], info["seed"], record["seed"]), {})[
                    info["index"]
                ] = record
        chosen = [
            k
            for k in series
            if (fraction is None or k[0] == fraction)
            and (seed is None or k[1] == seed)
            and (train_seed is None or k[2] == train_seed)
        ]
        if not chosen:
            raise StoreError(
                f"{self.path}: no LDS subset runs"
                + (
                    f" with fraction {fraction} and seed {seed}"
                    if series
                    else "; run influcoder validate with --lds-subsets"
                )
            )
        if len(chosen) > 1:
            raise StoreError(
                f"{self.path}: several series of LDS runs (fraction, subset seed, "
                f"training seed): {sorted(chosen)}; choose one with --lds-fraction "
                "and --lds-seed"
            )
        runs = series[chosen[0]]
        n = 0
        while n in runs and (count is None or n < count):
            n += 1
        if n < 2 or (count is not None and n < count):
            raise StoreError(
                f"{self.path}: {n} consecutive LDS subset runs saved"
                + (f", {count} asked for" if count else ", LDS needs at least 2")
            )
        subsets = [np.asarray(runs[m]["keep"], dtype=np.int64) for m in range(n)]
        losses = {
            name: np.stack([runs[m]["losses"][name] for m in range(n)])
            for name in self.manifest["eval"]
        }
        return subsets, losses

    def describe(self) -> list[str]:
        """What ``influcoder info`` prints about the store."""
        m = self.manifest
        counts: dict[str, int] = {}
        seconds = 0.0
        for path in self.files():
            record = self.read_file(path)
            kind = record.get("label", "?").split(" ")[0] if "lds" not in record else LDS_LABEL
            counts[kind] = counts.get(kind, 0) + 1
            seconds += float(record.get("seconds", 0.0))
        sets = ", ".join(f"{k} ({v['n']} samples)" for k, v in m["eval"].items())
        return [
            (
                f"{self.path}: runs, {sum(counts.values())} training runs over a pool of "
                f"{m['pool']['n']} samples; evaluation sets: {sets}"
            ),
            "runs by kind: "
            + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none yet")
            + f"; {seconds:.0f} s of training in all",
            json.dumps({"recipe": m["recipe"], "training": m["training"]}, indent=2),
        ]


def _short(manifest: dict) -> dict:
    """A manifest with its id lists replaced by their digests, for readable differences."""
    out = json.loads(json.dumps(manifest))
    out["pool"].pop("ids", None)
    for info in out.get("eval", {}).values():
        info.pop("ids", None)
        info.pop("fields", None)
    return out


def is_run_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a manifest of kind ``runs`` (any other content: False)."""
    try:
        manifest = json.loads(Path(path, MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(manifest, dict) and manifest.get("kind") == RUNS_KIND


def open_runs(path: str | os.PathLike) -> RunStore:
    """Open a run store read-only, checking its manifest (errors name the file and field)."""
    path = Path(path)
    mpath = path / MANIFEST_NAME
    if not mpath.is_file():
        raise StoreError(
            f"{path}: not a run store (no {MANIFEST_NAME}); give the runs folder "
            "of an influcoder validate output, e.g. OUT/runs"
        )
    try:
        manifest: Any = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{mpath}: cannot read: {e}") from None
    _check(
        isinstance(manifest, dict) and manifest.get("kind") == RUNS_KIND,
        mpath,
        "kind",
        f"expected '{RUNS_KIND}' (a run store)",
    )
    _check(
        manifest.get("version") == RUNS_VERSION,
        mpath,
        "version",
        f"this influcoder reads version {RUNS_VERSION}",
    )
    for name in ("recipe", "training", "pool", "eval", "context"):
        _check(name in manifest, mpath, name, "missing")
    _check(
        isinstance(manifest["pool"], dict) and isinstance(manifest["pool"].get("n"), int),
        mpath,
        "pool.n",
        "must be the pool's size",
    )
    for name, info in manifest["eval"].items():
        _check(
            isinstance(info, dict)
            and isinstance(info.get("n"), int)
            and len(info.get("ids", [])) == info["n"],
            mpath,
            f"eval.{name}",
            "must give n and that many ids",
        )
    return RunStore(path, manifest)
