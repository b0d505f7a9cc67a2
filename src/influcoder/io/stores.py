"""Stores: per-sample vectors plus a manifest, resumable and checked.

One format holds every per-sample vector influcoder makes: sketched decoder gradients
(``kind="gradients"``) and encoder embeddings (``kind="embeddings"``). A store is a directory
(file names in :mod:`influcoder.io.layout`):

* ``manifest.json``: format version, kind, ``setup`` (everything that must be identical for
  two stores to be comparable: model fingerprint, adapter hash, LoRA config, sketch seed and
  dimension, template, truncation, ...), row count, dimension, dtype, shard size, a hash of
  the samples, and provenance (versions, times, settings that do not change the vectors);
* ``samples.jsonl``: the samples, in row order, so later stages need only the store;
* ``vectors/NNNNN.safetensors``: shard *k* holds rows ``[k * shard_rows, (k + 1) * shard_rows)``.

Resumability: the rows of each shard are fixed by the sample order alone, every shard is
written atomically (temporary name, fsync, rename), and a shard exists only once complete. A
run killed at any moment and run again skips the shards already present and computes the
rest from exactly the same inputs, so it ends with exactly the vectors of an uninterrupted
run. ``manifest.json`` says ``"complete": true`` only once every shard is there.

Only safetensors, numpy and JSON are ever read: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from influcoder.errors import StoreError
from influcoder.io.atomic import atomic_write_bytes, atomic_write_json
from influcoder.io.layout import (
    DEFAULT_SHARD_ROWS,
    MANIFEST_NAME,
    NORMS_TENSOR,
    SAMPLES_NAME,
    SHARD_TENSOR,
    SHARDS_DIR,
    STORE_FORMAT_VERSION,
)
from influcoder.io.samples import Sample

FORMAT_NAME = "influcoder-store"


DTYPES = {"float16": np.float16, "float32": np.float32, "int8": np.int8}


def samples_digest(samples: Sequence[Sample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps(s.to_json(), sort_keys=True).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def setup_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two setups (nested dicts), one line each."""
    out = []
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        if key not in a or key not in b:
            out.append(f"{name}: {a.get(key, '<absent>')!r} vs {b.get(key, '<absent>')!r}")
        elif isinstance(a[key], dict) and isinstance(b[key], dict):
            out.extend(setup_differences(a[key], b[key], prefix=f"{name}."))
        elif a[key] != b[key]:
            out.append(f"{name}: {a[key]!r} vs {b[key]!r}")
    return out


def check_resumable(path, stored: dict, requested: dict, made: str) -> None:
    """Only the very same run may continue a store: refuse other settings, naming each."""
    diffs = setup_differences(stored, requested)
    if diffs:
        raise StoreError(
            f"{path} holds a store {made} with other settings (stored vs "
            f"requested):\n  " + "\n  ".join(diffs) + "\nRerun with the same "
            "options to resume it, or choose another --out."
        )


def check_same_setup(a: Store, b: Store) -> None:
    """Refuse to combine two stores whose vectors are not comparable, naming the difference."""
    diffs = [] if a.kind == b.kind else [f"kind: {a.kind!r} vs {b.kind!r}"]
    diffs += setup_differences(a.setup, b.setup)
    if a.dim != b.dim:
        diffs.append(f"dim: {a.dim} vs {b.dim}")
    if diffs:
        raise StoreError(
            f"stores {a.path} and {b.path} were built with different setups, so "
            f"their vectors are not comparable:\n  " + "\n  ".join(diffs)
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: cannot read: {e}") from None


def _load_shard(path: Path, rows: int, dim: int, dtype: str) -> np.ndarray:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        arr = load_file(str(path))[SHARD_TENSOR]
    except (OSError, KeyError, SafetensorError, ValueError) as e:
        raise StoreError(
            f"{path}: corrupt shard ({type(e).__name__}: {e}); delete it and rerun "
            f"the command to recompute it"
        ) from None
    if arr.shape != (rows, dim) or arr.dtype != DTYPES[dtype]:
        raise StoreError(
            f"{path}: corrupt shard: shape {arr.shape} {arr.dtype}, expected "
            f"({rows}, {dim}) {dtype}; delete it and rerun the command"
        )
    return arr


def _manifest_field(name: str, doc: str) -> property:
    """A read-only attribute that is the manifest's field ``name``."""
    return property(lambda self: self.manifest[name], doc=doc)


class Store:
    """A finished store, opened read-only. Use :func:`open_store`."""

    def __init__(self, path: str | os.PathLike, *, allow_incomplete: bool = False):
        self.path = Path(path)
        mpath = self.path / MANIFEST_NAME
        if not mpath.is_file():
            raise StoreError(f"{self.path}: not an influcoder store (no {MANIFEST_NAME})")
        self.manifest: dict = _read_json(mpath)
        if self.manifest.get("format") != FORMAT_NAME:
            raise StoreError(f"{mpath}: not an influcoder store manifest")
        if self.manifest.get("version") != STORE_FORMAT_VERSION:
            raise StoreError(
                f"{mpath}: store format version {self.manifest.get('version')}, "
                f"this influcoder reads version {STORE_FORMAT_VERSION}"
            )
        if not self.manifest.get("complete") and not allow_incomplete:
            done = len(self.present_shards())
            raise StoreError(
                f"{self.path}: incomplete store ({done} of {self.n_shards} shards); "
                f"rerun the command that built it to resume"
            )
        self._samples: list[Sample] | None = None

    # -- manifest fields
    kind = _manifest_field("kind", "``gradients`` or ``embeddings``")
    setup = _manifest_field("setup", "what must match for two stores to be comparable")
    n = _manifest_field("n", "number of rows (samples)")
    dim = _manifest_field("dim", "vector dimension")
    dtype = _manifest_field("dtype", "stored dtype of the vectors")
    shard_rows = _manifest_field("shard_rows", "rows per shard")

    @property
    def n_shards(self) -> int:
        return -(-self.n // self.shard_rows)

    def shard_range(self, k: int) -> tuple[int, int]:
        return k * self.shard_rows, min(self.n, (k + 1) * self.shard_rows)

    def shard_path(self, k: int) -> Path:
        return self.path / SHARDS_DIR / f"{k:05d}.safetensors"

    def present_shards(self) -> set[int]:
        return {k for k in range(self.n_shards) if self.shard_path(k).is_file()}

    # -- samples
    @property
    def samples(self) -> list[Sample]:
        if self._samples is None:
            path = self.path / SAMPLES_NAME
            try:
                with open(path, encoding="utf-8") as f:
                    samples = [Sample.from_json(json.loads(line)) for line in f if line.strip()]
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError) as e:
                raise StoreError(f"{path}: cannot read samples: {e}") from None
            if len(samples) != self.n:
                raise StoreError(f"{path}: {len(samples)} samples, manifest says {self.n}")
            self._samples = samples
        return self._samples

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    # -- vectors
    def shard(self, k: int) -> np.ndarray:
        """Shard ``k`` as stored (dtype of the manifest)."""
        start, stop = self.shard_range(k)
        return _load_shard(self.shard_path(k), stop - start, self.dim, self.dtype)

    def iter_chunks(self, dtype=np.float32) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, rows)`` shard by shard, so a huge store never sits in memory
        whole."""
        for k in range(self.n_shards):
            yield self.shard_range(k)[0], self.shard(k).astype(dtype, copy=False)

    def norms(self) -> np.ndarray:
        """Each row's L2 norm before it was normalised (float32, ``n``), for inner-product
        scores. A store written before norms were kept has none: :class:`StoreError`."""
        from safetensors import SafetensorError, safe_open

        out = np.empty(self.n, dtype=np.float32)
        for k in range(self.n_shards):
            start, stop = self.shard_range(k)
            path = self.shard_path(k)
            try:
                with safe_open(str(path), framework="numpy") as f:
                    if NORMS_TENSOR not in f.keys():
                        raise StoreError(
                            f"{self.path}: shard {path.name} keeps no row norms (the store was "
                            f"made before they were kept, or holds embeddings), so it can only "
                            f"be compared by cosine; collect it again for inner products"
                        )
                    norms = f.get_tensor(NORMS_TENSOR)
            except (OSError, SafetensorError) as e:
                raise StoreError(
                    f"{path}: corrupt shard ({e}); delete it and rerun the command to recompute it"
                ) from None
            if norms.shape != (stop - start,):
                raise StoreError(
                    f"{path}: corrupt shard: norms of shape {norms.shape}, "
                    f"expected ({stop - start},)"
                )
            out[start:stop] = norms
        return out

    def vectors(self, dtype=np.float32) -> np.ndarray:
        """All vectors, ``n x dim``, rows in :attr:`ids` order."""
        out = np.empty((self.n, self.dim), dtype=dtype)
        for start, chunk in self.iter_chunks(dtype):
            out[start : start + len(chunk)] = chunk
        return out

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, kind={self.kind!r}, n={self.n}, dim={self.dim})"

    def __fspath__(self) -> str:
        """A store is path-like (its directory), so whatever takes a store's path takes it."""
        return str(self.path)


def open_store(path: str | os.PathLike) -> Store:
    """Open a finished store: ``.ids``, ``.samples``, ``.manifest`` and ``.vectors()``. A
    :class:`Store` is returned as it is."""
    return path if isinstance(path, Store) else Store(path)


class StoreWriter:
    """Creates a store, or resumes one that an interrupted run left.

    Usage::

        writer = StoreWriter(path, kind="gradients", setup=setup, samples=samples, dim=d)
        for k in writer.missing_shards():
            start, stop = writer.shard_range(k)
            writer.write_shard(k, compute(samples[start:stop]))
        store = writer.finish()

    If ``path`` already holds a store, its setup, samples, dimension, dtype and shard size
    must equal the requested ones (else :class:`StoreError` names the difference); a complete
    store is returned as it is. Anything not a store in a non-empty ``path`` is refused rather
    than overwritten.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        kind: str,
        setup: dict,
        samples: Sequence[Sample],
        dim: int,
        dtype: str = "float16",
        shard_rows: int = DEFAULT_SHARD_ROWS,
        provenance: dict | None = None,
        prepare=None,
    ):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if shard_rows < 1 or dim < 1:
            raise ValueError("shard_rows and dim must be >= 1")
        self.path = Path(path)
        self.samples = list(samples)
        manifest = {
            "format": FORMAT_NAME,
            "version": STORE_FORMAT_VERSION,
            "kind": kind,
            "setup": setup,
            "n": len(self.samples),
            "dim": int(dim),
            "dtype": dtype,
            "shard_rows": int(shard_rows),
            "samples_sha256": samples_digest(self.samples),
            "complete": False,
        }
        mpath = self.path / MANIFEST_NAME
        if mpath.is_file():
            existing = Store(self.path, allow_incomplete=True).manifest
            wanted = {
                k: manifest[k]
                for k in ("kind", "setup", "n", "dim", "dtype", "shard_rows", "samples_sha256")
            }
            have = {k: existing.get(k) for k in wanted}
            diffs = setup_differences(have, wanted)
            if diffs:
                raise StoreError(
                    f"{self.path} already holds a store built differently (stored vs requested):"
                    f"\n  " + "\n  ".join(diffs) + "\nChoose another --out, or delete it."
                )
            self.manifest = existing
        else:
            if self.path.exists() and any(self.path.iterdir()):
                raise StoreError(
                    f"{self.path} exists and is not an influcoder store; refusing to write into it"
                )
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / SHARDS_DIR).mkdir(exist_ok=True)
            # Everything a shard depends on goes down before the manifest, so a manifest on
            # disk always describes a store that can be resumed.
            if prepare is not None:
                prepare(self.path)
            lines = "".join(
                json.dumps(s.to_json(), ensure_ascii=False) + "\n" for s in self.samples
            )
            atomic_write_bytes(self.path / SAMPLES_NAME, lines.encode("utf-8"))
            manifest["provenance"] = {**(provenance or {}), "created": _now()}
            atomic_write_json(mpath, manifest)
            self.manifest = manifest
        self._store = Store(self.path, allow_incomplete=True)
        (self.path / SHARDS_DIR).mkdir(exist_ok=True)
        for stale in (self.path / SHARDS_DIR).glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    @property
    def n(self) -> int:
        return self._store.n

    def shard_range(self, k: int) -> tuple[int, int]:
        return self._store.shard_range(k)

    def missing_shards(self) -> list[int]:
        present = self._store.present_shards()
        return [k for k in range(self._store.n_shards) if k not in present]

    def missing_rows(self) -> int:
        return sum(b - a for a, b in map(self.shard_range, self.missing_shards()))

    def write_shard(self, k: int, rows: np.ndarray, norms: np.ndarray | None = None) -> None:
        """Write shard ``k``: its ``rows`` and, optionally, each row's ``norms`` before
        normalisation (positive, kept in float32)."""
        from safetensors.numpy import save

        start, stop = self.shard_range(k)
        dtype = self.manifest["dtype"]
        if rows.shape != (stop - start, self.manifest["dim"]):
            raise ValueError(
                f"shard {k}: got shape {rows.shape}, expected "
                f"({stop - start}, {self.manifest['dim']})"
            )
        if not np.isfinite(rows).all():
            raise ValueError(f"shard {k}: non-finite values")
        tensors = {SHARD_TENSOR: np.ascontiguousarray(rows.astype(DTYPES[dtype]))}
        if norms is not None:
            norms = np.asarray(norms, dtype=np.float32)
            if norms.shape != (stop - start,) or not (np.isfinite(norms) & (norms > 0)).all():
                raise ValueError(
                    f"shard {k}: norms must be {stop - start} positive finite "
                    f"values, got shape {norms.shape}"
                )
            tensors[NORMS_TENSOR] = np.ascontiguousarray(norms)
        data = save(tensors)
        atomic_write_bytes(self._store.shard_path(k), data)

    def finish(self, **provenance) -> Store:
        """Mark the store complete (all shards must be present) and open it."""
        missing = self.missing_shards()
        if missing:
            raise StoreError(f"{self.path}: cannot finish, {len(missing)} shards missing")
        if not self.manifest.get("complete"):
            self.manifest["complete"] = True
            self.manifest["provenance"] = {
                **self.manifest.get("provenance", {}),
                **provenance,
                "finished": _now(),
            }
            atomic_write_json(self.path / MANIFEST_NAME, self.manifest)
        return Store(self.path)


def package_versions(*packages: str) -> dict:
    """Installed versions of influcoder, torch, transformers, numpy and ``packages`` (None
    where absent), for a store's provenance."""
    import importlib.metadata as md

    out = {}
    for pkg in ("influcoder", "torch", "transformers", "numpy", *packages):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
