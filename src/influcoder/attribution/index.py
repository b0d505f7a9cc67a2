"""The embedding index: a pool encoded once, searched in milliseconds, appendable.

An index is a directory::

    INDEX/index.json          what it holds: encoder fingerprint, setup, settings, segments
                              (with the path, format and fields of the data each came from),
                              FAISS kind and parameters, row count. Written last.
    INDEX/segments/00000/     one embedding store per data set added (influcoder.io.stores)
    INDEX/segments/00001/     ... (``--append``)
    INDEX/faiss.index         the approximate FAISS index (``hnsw``/``ivf`` only)
    INDEX/stats.safetensors   mean and second moment of the pool's vectors (for z-scores)

Rows are numbered across segments in order: segment 0's rows, then segment 1's, and so on.

FAISS kinds (all inner product: cosine on unit vectors, or the dot product of an encoder that
compares so, :func:`~influcoder.encoders.directory.encoder_similarity`; each made by
``faiss.index_factory`` from the string :func:`faiss_spec` gives):

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
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from influcoder.attribution.settings import (
    DEFAULT_EF_SEARCH,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    IVF_MIN_PER_LIST,
    IVF_PROBE_FRACTION,
    SEED,
    EncodeArguments,
)
from influcoder.errors import MissingPackageError, StoreError
from influcoder.io.samples import Sample
from influcoder.io.stores import Store, setup_differences
from influcoder.similarity import compared_rows, compares_by_dot

INDEX_FILE = "index.json"


SEGMENTS_DIR = "segments"


FAISS_FILE = "faiss.index"


STATS_FILE = "stats.safetensors"


INDEX_FORMAT = "influcoder-index"


INDEX_VERSION = 1


def import_faiss():
    """The ``faiss`` module, or a :class:`MissingPackageError` saying what to install."""
    try:
        import faiss
    except ImportError:
        raise MissingPackageError("faiss-cpu", "The embedding index") from None
    return faiss


def faiss_params(kind: str, n: int) -> dict:
    """Default parameters of a FAISS kind for ``n`` rows."""
    if kind == "hnsw":
        return {
            "m": HNSW_M,
            "ef_construction": HNSW_EF_CONSTRUCTION,
            "ef_search": DEFAULT_EF_SEARCH,
        }
    if kind == "ivf":
        nlist = max(1, min(round(math.sqrt(n)), n // IVF_MIN_PER_LIST))
        return {"nlist": nlist, "nprobe": max(1, math.ceil(nlist * IVF_PROBE_FRACTION))}
    return {}


def faiss_spec(kind: str, params: dict) -> str:
    """The ``faiss.index_factory`` string of a FAISS kind: ``Flat``, ``HNSW{m}_SQfp16`` (an
    ``IndexHNSWSQ``) or ``IVF{nlist},SQfp16`` (an ``IndexIVFScalarQuantizer`` on a flat
    quantizer). These are the classes indexes have always been built with, so a
    ``faiss.index`` written by any release reads back the same."""
    if kind == "hnsw":
        return f"HNSW{params['m']}_SQfp16"
    if kind == "ivf":
        return f"IVF{params['nlist']},SQfp16"
    return "Flat"


def new_faiss(kind: str, dim: int, params: dict):
    """An empty inner-product FAISS index of ``kind`` with ``params`` (see :func:`faiss_params`).

    The factory string fixes the structure; what it cannot say is set here: HNSW's
    ``efConstruction``, and IVF's k-means, spherical (the rows are unit vectors) and seeded
    (:data:`~influcoder.attribution.settings.SEED`), so a rebuild trains the same lists.
    Search-time settings (``efSearch``, ``nprobe``) are applied by :meth:`Index.search`.
    """
    faiss = import_faiss()
    index = faiss.index_factory(dim, faiss_spec(kind, params), faiss.METRIC_INNER_PRODUCT)
    if kind == "hnsw":
        index.hnsw.efConstruction = params["ef_construction"]
    elif kind == "ivf":
        index.cp.spherical = True
        index.cp.seed = SEED
    return index


def read_index_meta(path: Path) -> dict:
    """The index file of the index at ``path``, checked to be one (a :class:`StoreError`
    naming the file otherwise)."""
    file = path / INDEX_FILE
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{file}: cannot read: {e}") from None
    if meta.get("format") != INDEX_FORMAT:
        raise StoreError(f"{file}: not an influcoder index")
    if meta.get("version") != INDEX_VERSION:
        raise StoreError(
            f"{file}: index format version {meta.get('version')}, this influcoder "
            f"reads version {INDEX_VERSION}"
        )
    return meta


class Index:
    """A built index, opened read-only. ``nprobe``/``ef_search`` override the stored search
    parameters of an ``ivf``/``hnsw`` index."""

    def __init__(
        self, path: str | os.PathLike, *, nprobe: int | None = None, ef_search: int | None = None
    ):
        self.path = Path(path)
        if not (self.path / INDEX_FILE).is_file():
            raise StoreError(
                f"{self.path}: not an influcoder index (no {INDEX_FILE}); build one "
                f"with: influcoder index ENCODER DATA --out {self.path}"
            )
        self.meta = read_index_meta(self.path)
        self.segments = [Store(self.path / SEGMENTS_DIR / s["name"]) for s in self.meta["segments"]]
        self.offsets = np.cumsum([0] + [s.n for s in self.segments])
        if self.offsets[-1] != self.meta["n"]:
            raise StoreError(
                f"{self.path}: segments hold {self.offsets[-1]} rows, {INDEX_FILE} "
                f"says {self.meta['n']}"
            )
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
    def score_name(self) -> str:
        """What a score is, for messages: ``cosine``, or ``dot product`` for an encoder that
        compares so (its store setup says ``"normalized": false``)."""
        return "dot product" if compares_by_dot(self.setup) else "cosine"

    @property
    def encoder_name(self) -> str:
        return self.meta["encoder"]["name"]

    def __fspath__(self) -> str:
        """An index is path-like (its directory), like a :class:`~influcoder.io.stores.Store`."""
        return str(self.path)

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
        """``(first_row, float32 rows)`` shard by shard over every segment, as they are
        compared (unit length unless the store says otherwise, :func:`compared_rows`)."""
        for offset, seg in zip(self.offsets, self.segments):
            for start, chunk in seg.iter_chunks():
                yield int(offset + start), compared_rows(seg, chunk)

    def vectors(self) -> np.ndarray:
        """All vectors as compared, ``n x dim`` float32 (the exact reference for search)."""
        out = np.empty((self.n, self.dim), dtype=np.float32)
        for start, chunk in self.iter_chunks():
            out[start : start + len(chunk)] = chunk
        return out

    def rows(self, rows) -> np.ndarray:
        """The vectors of some global ``rows`` (in that order, as compared), reading only the
        shards that hold them."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n):
            raise ValueError(f"rows must be between 0 and {self.n - 1}")
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        seg_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for seg in np.unique(seg_of):
            store = self.segments[seg]
            at = np.flatnonzero(seg_of == seg)
            local = rows[at] - self.offsets[seg]
            shard_of = local // store.shard_rows
            for k in np.unique(shard_of):
                here = shard_of == k
                shard = store.shard(int(k)).astype(np.float32, copy=False)
                out[at[here]] = shard[local[here] - k * store.shard_rows]
        return compared_rows(self.segments[0], out)

    # -- search
    @property
    def faiss_index(self):
        if self._faiss is None:
            self._faiss = self._load_faiss()
        return self._faiss

    def _load_faiss(self):
        faiss = import_faiss()
        if self.kind == "flat":
            index = new_faiss("flat", self.dim, {})
            for _, chunk in self.iter_chunks():
                index.add(chunk)
            return index
        file = self.path / FAISS_FILE
        rebuild = (
            "delete it and rerun `influcoder index` with the same arguments to rebuild "
            "it from the stored embeddings"
        )
        try:
            index = faiss.read_index(str(file))
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StoreError(f"{file}: cannot read the FAISS index ({first}); {rebuild}") from None
        if index.ntotal != self.n or index.d != self.dim:
            raise StoreError(
                f"{file}: holds {index.ntotal} x {index.d} vectors, the index "
                f"{self.n} x {self.dim}; {rebuild}"
            )
        return index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows per query: ``(scores, rows)``, each ``n_query x k``, best first.
        ``queries`` are unit vectors. An approximate index may find fewer than ``k`` rows for
        a query: the missing places hold row -1 and score -inf."""
        if not 1 <= k <= self.n:
            raise ValueError(f"k must be between 1 and the pool size {self.n}, got {k}")
        index = self.faiss_index
        faiss = import_faiss()
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
                raise StoreError(
                    f"{file}: cannot read ({e}); rerun `influcoder index` with the "
                    f"same arguments to rewrite it"
                ) from None
            if int(t["count"][0]) != self.n:
                raise StoreError(
                    f"{file}: covers {int(t['count'][0])} rows, the index {self.n}; "
                    f"rerun `influcoder index` with the same arguments"
                )
            mean = t["sum"] / self.n
            self._stats = mean, t["sum_outer"] / self.n - np.outer(mean, mean)
        return self._stats

    def z_scores(self, queries: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """How many standard deviations each score (``n_query x k``) lies above the mean
        score of the whole pool for its query."""
        mean, cov = self.stats()
        q = np.asarray(queries, dtype=np.float64)
        mu = q @ mean
        # q^T cov q per query, as a matrix product (a three-operand einsum is ten times slower)
        sd = np.sqrt(np.maximum(((q @ cov) * q).sum(axis=1), 1e-12))
        return ((scores - mu[:, None]) / sd[:, None]).astype(np.float32)

    def __repr__(self) -> str:
        return (
            f"Index({str(self.path)!r}, n={self.n}, dim={self.dim}, kind={self.kind!r}, "
            f"segments={len(self.segments)})"
        )


def open_index(path: str | os.PathLike, **kwargs) -> Index:
    """Open a built index (see :class:`Index`); an :class:`Index` without ``kwargs`` is
    returned as it is."""
    return path if isinstance(path, Index) and not kwargs else Index(path, **kwargs)


def check_encoder(meta: dict, encoder: str, fingerprint: str) -> None:
    """Refuse an encoder other than the one the index was built with, naming both."""
    built = meta["encoder"]
    if fingerprint != built["fingerprint"]:
        raise StoreError(
            f"the index {meta['path']} was built with the encoder "
            f"'{built['name']}' ({built['fingerprint']}), not with '{encoder}' "
            f"({fingerprint}): their vectors are not comparable. Use the same "
            f"encoder, or build a new index with this one"
        )
