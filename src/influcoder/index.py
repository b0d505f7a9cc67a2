"""The embedding index: a pool encoded once, searched in milliseconds, appendable.

An index is a directory::

    INDEX/index.json          what it holds: encoder fingerprint, setup, settings, segments
                              (with the path, format and fields of the data each came from),
                              FAISS kind and parameters, row count. Written last.
    INDEX/segments/00000/     one embedding store per data set added (influcoder.store)
    INDEX/segments/00001/     ... (``--append``)
    INDEX/faiss.index         the approximate FAISS index (``hnsw``/``ivf`` only)
    INDEX/stats.safetensors   mean and second moment of the pool's vectors (for z-scores)

Rows are numbered across segments in order: segment 0's rows, then segment 1's, and so on.

FAISS kinds (all inner product on unit vectors, i.e. cosine):

* ``flat`` (default): exact search. Nothing extra is written: an exact index *is* the
  vectors, so it is rebuilt in memory from the stores when the index is opened (the same
  bytes as reading a saved copy, and half the disk).
* ``hnsw``: a graph (``IndexHNSWSQ``, M=32, vectors held as float16), for millions of
  samples; ``ef_search`` trades speed for recall at query time.
* ``ivf``: an inverted file (``IndexIVFScalarQuantizer``, float16, about sqrt(N) lists
  trained by spherical k-means on a seeded sample); ``nprobe`` trades speed for recall.
  Appended rows go to the lists trained on the first data; rebuild (``--approx ivf`` on a
  fresh ``--out``) when later data look very different.

``benchmarks/bench_attribution.py`` reports each kind's recall@10 against exact search.

Building is resumable and atomic like every store: the segment being encoded is a store that
resumes where an interrupted run stopped; ``faiss.index`` and ``index.json`` are replaced
atomically once the segment is complete, so a reader sees the old index or the new, never a
mix. Appending encodes only the new data; an ``hnsw``/``ivf`` index is extended in place.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .data import Fields, Sample, load_samples
from .encode import EncodeArguments, encode
from .errors import InputError, MissingPackageError, StoreError
from .fast_encoder import encoder_fingerprint, normalize
from .store import (Store, atomic_write_bytes, atomic_write_json, samples_digest,
                    setup_differences)

INDEX_FILE = "index.json"
SEGMENTS_DIR = "segments"
FAISS_FILE = "faiss.index"
STATS_FILE = "stats.safetensors"
INDEX_FORMAT = "influcoder-index"
INDEX_VERSION = 1
FAISS_KINDS = ("flat", "hnsw", "ivf")

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
DEFAULT_EF_SEARCH = 128
#: IVF: training points per list (k-means on at most this many times nlist rows).
IVF_TRAIN_PER_LIST = 64
#: IVF: faiss wants at least this many training points per list.
IVF_MIN_PER_LIST = 39
#: IVF: share of the lists searched by default (recall@10 about 0.97 on the benchmark's
#: synthetic embeddings).
IVF_PROBE_FRACTION = 1 / 4
SEED = 0


def _faiss():
    try:
        import faiss
    except ImportError:
        raise MissingPackageError("faiss-cpu", "The embedding index") from None
    return faiss


@dataclass(frozen=True)
class Source:
    """Where a segment's samples came from, so ``filter`` can write kept rows as they were."""

    path: str | None
    format: str | None
    fields: dict
    limit: int | None = None
    split: str | None = None

    @classmethod
    def of(cls, data, fields: Fields, limit: int | None, split: str) -> "Source":
        from .data import FORMATS

        if isinstance(data, list) or str(data) == "-":
            return cls(None, None, asdict(fields), limit)
        path = Path(data)
        if path.exists():
            return cls(str(path.resolve()), FORMATS.get(path.suffix.lower()), asdict(fields),
                       limit)
        return cls(str(data), "hf", asdict(fields), limit, split)


def faiss_params(kind: str, n: int) -> dict:
    """Default parameters of a FAISS kind for ``n`` rows."""
    if kind == "hnsw":
        return {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION,
                "ef_search": DEFAULT_EF_SEARCH}
    if kind == "ivf":
        nlist = max(1, min(round(math.sqrt(n)), n // IVF_MIN_PER_LIST))
        return {"nlist": nlist, "nprobe": max(1, math.ceil(nlist * IVF_PROBE_FRACTION))}
    return {}


# ---------------------------------------------------------------------------------------------
# Reading


def _read_meta(path: Path) -> dict:
    file = path / INDEX_FILE
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{file}: cannot read: {e}") from None
    if meta.get("format") != INDEX_FORMAT:
        raise StoreError(f"{file}: not an influcoder index")
    if meta.get("version") != INDEX_VERSION:
        raise StoreError(f"{file}: index format version {meta.get('version')}, this influcoder "
                         f"reads version {INDEX_VERSION}")
    return meta


class Index:
    """A built index, opened read-only. ``nprobe``/``ef_search`` override the stored search
    parameters of an ``ivf``/``hnsw`` index."""

    def __init__(self, path: str | os.PathLike, *, nprobe: int | None = None,
                 ef_search: int | None = None):
        self.path = Path(path)
        if not (self.path / INDEX_FILE).is_file():
            raise StoreError(f"{self.path}: not an influcoder index (no {INDEX_FILE}); build one "
                             f"with: influcoder index ENCODER DATA --out {self.path}")
        self.meta = _read_meta(self.path)
        self.segments = [Store(self.path / SEGMENTS_DIR / s["name"]) for s in self.meta["segments"]]
        self.offsets = np.cumsum([0] + [s.n for s in self.segments])
        if self.offsets[-1] != self.meta["n"]:
            raise StoreError(f"{self.path}: segments hold {self.offsets[-1]} rows, {INDEX_FILE} "
                             f"says {self.meta['n']}")
        for seg in self.segments:
            diffs = setup_differences(seg.setup, self.setup)
            if diffs:
                raise StoreError(f"{seg.path}: not built like the index:\n  " + "\n  ".join(diffs))
        self.search_params = {**self.meta["faiss"]["params"]}
        for key, value in (("nprobe", nprobe), ("ef_search", ef_search)):
            if value is not None:
                if value < 1:
                    raise ValueError(f"{key} must be >= 1")
                self.search_params[key] = value
        self._faiss = None
        self._stats = None

    # -- what it holds
    @property
    def n(self) -> int:
        return int(self.meta["n"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def setup(self) -> dict:
        return self.meta["setup"]

    @property
    def kind(self) -> str:
        return self.meta["faiss"]["kind"]

    @property
    def encoder_name(self) -> str:
        return self.meta["encoder"]["name"]

    @property
    def encoder_fingerprint(self) -> str:
        return self.meta["encoder"]["fingerprint"]

    @property
    def arguments(self) -> EncodeArguments:
        return EncodeArguments(**self.meta["arguments"])

    def locate(self, row: int) -> tuple[int, int]:
        """``(segment, row within it)`` of a global row."""
        seg = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return seg, int(row - self.offsets[seg])

    def sample(self, row: int) -> Sample:
        seg, local = self.locate(row)
        return self.segments[seg].samples[local]

    @property
    def ids(self) -> list[str]:
        return [i for seg in self.segments for i in seg.ids]

    def iter_chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, unit float32 rows)`` shard by shard over every segment."""
        for offset, seg in zip(self.offsets, self.segments):
            for start, chunk in seg.iter_chunks():
                yield int(offset + start), normalize(chunk)

    def vectors(self) -> np.ndarray:
        """All unit vectors, ``n x dim`` float32 (the exact reference for search)."""
        out = np.empty((self.n, self.dim), dtype=np.float32)
        for start, chunk in self.iter_chunks():
            out[start:start + len(chunk)] = chunk
        return out

    # -- search
    @property
    def faiss_index(self):
        if self._faiss is None:
            self._faiss = self._load_faiss()
        return self._faiss

    def _load_faiss(self):
        faiss = _faiss()
        if self.kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
            for _, chunk in self.iter_chunks():
                index.add(chunk)
            return index
        file = self.path / FAISS_FILE
        rebuild = ("delete it and rerun `influcoder index` with the same arguments to rebuild "
                   "it from the stored embeddings")
        try:
            index = faiss.read_index(str(file))
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StoreError(f"{file}: cannot read the FAISS index ({first}); {rebuild}") from None
        if index.ntotal != self.n or index.d != self.dim:
            raise StoreError(f"{file}: holds {index.ntotal} x {index.d} vectors, the index "
                             f"{self.n} x {self.dim}; {rebuild}")
        return index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows per query: ``(scores, rows)``, each ``n_query x k``, best first.
        ``queries`` are unit vectors. An approximate index may find fewer than ``k`` rows for
        a query: the missing places hold row -1 and score -inf."""
        if not 1 <= k <= self.n:
            raise ValueError(f"k must be between 1 and the pool size {self.n}, got {k}")
        index = self.faiss_index
        faiss = _faiss()
        if self.kind == "ivf":
            faiss.extract_index_ivf(index).nprobe = int(self.search_params["nprobe"])
        elif self.kind == "hnsw":
            index.hnsw.efSearch = max(int(self.search_params["ef_search"]), k)
        scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        scores[rows < 0] = -np.inf
        return scores, rows

    # -- reading scores
    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (``dim``) and covariance (``dim x dim``) of the pool's unit vectors."""
        if self._stats is None:
            from safetensors import SafetensorError
            from safetensors.numpy import load_file

            file = self.path / STATS_FILE
            try:
                t = load_file(str(file))
            except (OSError, SafetensorError) as e:
                raise StoreError(f"{file}: cannot read ({e}); rerun `influcoder index` with the "
                                 f"same arguments to rewrite it") from None
            if int(t["count"][0]) != self.n:
                raise StoreError(f"{file}: covers {int(t['count'][0])} rows, the index {self.n}; "
                                 f"rerun `influcoder index` with the same arguments")
            mean = t["sum"] / self.n
            self._stats = mean, t["sum_outer"] / self.n - np.outer(mean, mean)
        return self._stats

    def z_scores(self, queries: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """How many standard deviations each score (``n_query x k``) lies above the mean
        score of the whole pool for its query."""
        mean, cov = self.stats()
        q = np.asarray(queries, dtype=np.float64)
        mu = q @ mean
        sd = np.sqrt(np.maximum(np.einsum("qd,de,qe->q", q, cov, q), 1e-12))
        return ((scores - mu[:, None]) / sd[:, None]).astype(np.float32)

    def __repr__(self) -> str:
        return (f"Index({str(self.path)!r}, n={self.n}, dim={self.dim}, kind={self.kind!r}, "
                f"segments={len(self.segments)})")


def open_index(path: str | os.PathLike, **kwargs) -> Index:
    """Open a built index (see :class:`Index`)."""
    return Index(path, **kwargs)


# ---------------------------------------------------------------------------------------------
# Building


def _new_faiss(kind: str, dim: int, params: dict):
    faiss = _faiss()
    fp16 = faiss.ScalarQuantizer.QT_fp16
    if kind == "hnsw":
        index = faiss.IndexHNSWSQ(dim, fp16, params["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
        return index
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, params["nlist"], fp16,
                                          faiss.METRIC_INNER_PRODUCT)
    index.cp.spherical = True
    index.cp.seed = SEED
    return index


def _training_rows(stores: list[Store], n: int, want: int) -> np.ndarray:
    """A seeded random sample of ``want`` unit rows of the stores (in row order)."""
    picked = np.sort(np.random.default_rng(SEED).choice(n, size=min(want, n), replace=False))
    out, offset = [], 0
    for store in stores:
        for start, chunk in store.iter_chunks():
            lo = offset + start
            sel = picked[(picked >= lo) & (picked < lo + len(chunk))] - lo
            out.append(normalize(chunk[sel]))
        offset += store.n
    return np.concatenate(out)


def _write_faiss(index, path: Path) -> None:
    """faiss.write_index to a temporary name, fsync, rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        _faiss().write_index(index, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _add_rows(index, stores: list[Store]) -> None:
    for store in stores:
        for _, chunk in store.iter_chunks():
            index.add(normalize(chunk))


def _update_faiss(out: Path, stores: list[Store], old: dict | None, kind: str, n_old: int,
                  log) -> dict:
    """Bring ``faiss.index`` up to date with ``stores``: extend the existing one by the rows
    past ``n_old`` when it holds exactly those of the same kind, else build it anew."""
    n = sum(s.n for s in stores)
    if kind == "flat":
        (out / FAISS_FILE).unlink(missing_ok=True)
        return {"kind": "flat", "file": None, "params": {}, "n": n}
    file = out / FAISS_FILE
    faiss = _faiss()
    index = None
    if old is not None and old["kind"] == kind and file.is_file() and old["n"] == n_old:
        try:
            index = faiss.read_index(str(file))
        except RuntimeError:
            log(f"{file} is unreadable: rebuilding it")
        if index is not None and index.ntotal == n:
            return {**old, "n": n}
        if index is not None and index.ntotal != n_old:
            index = None
    if index is not None:
        params = old["params"]
        new_stores, skip = [], n_old
        for store in stores:
            if skip >= store.n:
                skip -= store.n
                continue
            if skip:
                raise StoreError(f"{out}: cannot extend the FAISS index from inside a segment")
            new_stores.append(store)
        log(f"adding {n - n_old} rows to the {kind} index")
        _add_rows(index, new_stores)
    else:
        params = faiss_params(kind, n)
        dim = stores[0].dim
        index = _new_faiss(kind, dim, params)
        log(f"building the {kind} index over {n} rows")
        if not index.is_trained:
            want = params.get("nlist", 1) * IVF_TRAIN_PER_LIST
            index.train(_training_rows(stores, n, want))
        _add_rows(index, stores)
    _write_faiss(index, file)
    return {"kind": kind, "file": FAISS_FILE, "params": params, "n": n}


def _write_stats(out: Path, stores: list[Store]) -> None:
    """Sum and sum of outer products of the unit rows (float64), for :meth:`Index.z_scores`."""
    from safetensors.numpy import save

    dim = stores[0].dim
    total, outer, count = np.zeros(dim), np.zeros((dim, dim)), 0
    for store in stores:
        for _, chunk in store.iter_chunks():
            x = normalize(chunk).astype(np.float64)
            total += x.sum(axis=0)
            outer += x.T @ x
            count += len(x)
    atomic_write_bytes(out / STATS_FILE, save({"sum": total, "sum_outer": outer,
                                               "count": np.array([count], dtype=np.int64)}))


def _stats_current(out: Path, n: int) -> bool:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return int(load_file(str(out / STATS_FILE))["count"][0]) == n
    except (OSError, SafetensorError, KeyError):
        return False


def _settings(meta: dict | None, encoder: str | None, given: dict) -> EncodeArguments:
    """The index's settings (or the defaults), with ``given`` ones that may differ; a given
    setting that would change the vectors of an existing index is refused."""
    if meta is None:
        return EncodeArguments(**{k: v for k, v in given.items() if v is not None},
                               **({"encoder": encoder} if encoder else {}))
    stored = EncodeArguments(**meta["arguments"])
    fixed = {k: given[k] for k in ("dtype", "max_seq_length", "shard_rows")
             if given.get(k) is not None and given[k] != getattr(stored, k)}
    if fixed:
        raise StoreError(f"the index {meta['path']} was built with "
                         + ", ".join(f"{k}={getattr(stored, k)!r}" for k in fixed)
                         + "; new segments must match (requested "
                         + ", ".join(f"{k}={v!r}" for k, v in fixed.items()) + ")")
    free = {k: given[k] for k in ("backend", "batch_size") if given.get(k) is not None}
    return replace(stored, encoder=encoder or meta["encoder"]["name"], **free)


def check_encoder(meta: dict, encoder: str, fingerprint: str) -> None:
    """Refuse an encoder other than the one the index was built with, naming both."""
    built = meta["encoder"]
    if fingerprint != built["fingerprint"]:
        raise StoreError(f"the index {meta['path']} was built with the encoder "
                         f"'{built['name']}' ({built['fingerprint']}), not with '{encoder}' "
                         f"({fingerprint}): their vectors are not comparable. Use the same "
                         f"encoder, or build a new index with this one")


def _check_duplicates(out: Path, meta: dict | None, samples: list[Sample], source: str) -> None:
    new = {s.id for s in samples}
    if len(new) != len(samples):
        raise InputError("duplicate sample ids", path=source)
    for seg in meta["segments"] if meta else ():
        seen = [i for i in Store(out / SEGMENTS_DIR / seg["name"]).ids if i in new]
        if seen:
            shown = ", ".join(f"'{i}'" for i in seen[:5]) + (", ..." if len(seen) > 5 else "")
            raise InputError(f"{len(seen)} sample ids are already in the index (segment "
                             f"{seg['name']}, from {seg['source']['path']}): {shown}. An index "
                             f"holds each id once", path=source)


def build_index(data, out: str | os.PathLike, encoder: str | None = None, *,
                append: bool = False, approx: str | None = None, backend: str | None = None,
                dtype: str | None = None, max_seq_length: int | None = None,
                batch_size: int | None = None, shard_rows: int | None = None,
                fields: Fields | None = None, limit: int | None = None, split: str = "train",
                engine: str = "local", ray_address: str | None = None,
                num_workers: int | None = None, progress: bool = True, log=print) -> Index:
    """Encode ``data`` into the index ``out`` (create it, resume it, or ``append`` to it).

    Args:
        data: a data file (``-``: JSONL on stdin), an HF dataset name, or a list of
            :class:`Sample`.
        out: the index directory.
        encoder: a sentence-transformers directory or ``all-minilm-l6-v2``; for an existing
            index, None means the one it was built with (its fingerprint must match).
        append: add ``data`` as a new segment (without it, an existing index must already hold
            exactly ``data``, and the call only finishes or re-kinds it).
        approx: FAISS kind, ``flat``/``hnsw``/``ivf``; None keeps the index's (new: ``flat``).
            A different kind rebuilds ``faiss.index`` from the stored vectors.
        backend, batch_size: how to run the encoder (see
            :class:`~influcoder.encode.EncodeArguments`).
        dtype, max_seq_length, shard_rows: how vectors are made and stored; fixed once the
            index exists.
        engine, ray_address, num_workers: where shards are encoded (:mod:`influcoder.engines`).

    Example::

        >>> index = build_index("train.jsonl", "runs/index", "all-minilm-l6-v2")
        >>> index = build_index("more.jsonl", "runs/index", append=True)
    """
    if approx is not None and approx not in FAISS_KINDS:
        raise ValueError(f"approx must be one of {FAISS_KINDS}, got {approx!r}")
    out = Path(out)
    fields = fields or Fields()
    meta = _read_meta(out) if (out / INDEX_FILE).is_file() else None
    if meta is None and out.is_dir() and any(p.name != SEGMENTS_DIR for p in out.iterdir()):
        raise StoreError(f"{out} exists and is not an influcoder index; refusing to write into it")
    if meta is not None:
        meta["path"] = str(out)
    args = _settings(meta, encoder, {"backend": backend, "dtype": dtype, "batch_size": batch_size,
                                     "max_seq_length": max_seq_length, "shard_rows": shard_rows})
    fingerprint = encoder_fingerprint(args.encoder)
    if meta is not None:
        check_encoder(meta, args.encoder, fingerprint)
    samples = data if isinstance(data, list) else load_samples(data, fields=fields, limit=limit,
                                                               split=split)
    label = "<samples>" if isinstance(data, list) else str(data)
    source = Source.of(data, fields, limit, split)
    segments = list(meta["segments"]) if meta else []
    n_old = meta["n"] if meta else 0
    digest = samples_digest(samples)

    if meta is not None and not append:
        if not (len(segments) == 1 and segments[0]["samples_sha256"] == digest):
            raise StoreError(f"{out} already holds an index of other data; add {label} to it "
                             f"with --append, or choose another --out")
        log(f"{out} already holds {label}")
    else:
        _check_duplicates(out, meta, samples, label)
        name = f"{len(segments):05d}"
        seg_dir = out / SEGMENTS_DIR / name
        if (seg_dir / "manifest.json").is_file():
            pending = Store(seg_dir, allow_incomplete=True)
            if pending.manifest["samples_sha256"] != digest:
                raise StoreError(f"{seg_dir} holds an unfinished segment of other data (from "
                                 f"{pending.manifest['provenance'].get('source')}); rerun that "
                                 f"command to finish it, or delete {seg_dir}")
        seg_dir.parent.mkdir(parents=True, exist_ok=True)
        store = encode(samples, seg_dir, args, engine=engine, ray_address=ray_address,
                       num_workers=num_workers, progress=progress, log=log)
        if meta is not None and setup_differences(store.setup, meta["setup"]):
            raise StoreError(f"{seg_dir}: not built like the index:\n  "
                             + "\n  ".join(setup_differences(meta["setup"], store.setup)))
        segments.append({"name": name, "n": store.n, "samples_sha256": digest,
                         "source": asdict(source)})
        args = args_from_segment(store, args.encoder)

    stores = [Store(out / SEGMENTS_DIR / s["name"]) for s in segments]
    n = sum(s.n for s in stores)
    kind = approx or (meta["faiss"]["kind"] if meta else "flat")
    faiss_meta = _update_faiss(out, stores, meta["faiss"] if meta else None, kind, n_old, log)
    if not _stats_current(out, n):
        _write_stats(out, stores)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_json(out / INDEX_FILE, {
        "format": INDEX_FORMAT, "version": INDEX_VERSION, "kind": "embeddings",
        "encoder": {"name": args.encoder, "fingerprint": fingerprint},
        "setup": stores[0].setup, "arguments": args.to_dict(), "dim": stores[0].dim, "n": n,
        "segments": segments, "faiss": faiss_meta,
        "created": meta["created"] if meta else now, "updated": now})
    return Index(out)


def args_from_segment(store: Store, encoder: str) -> EncodeArguments:
    """The settings a segment was encoded with (the backend resolved)."""
    return replace(EncodeArguments(**store.manifest["provenance"]["arguments"]), encoder=encoder)
