"""Building an index: encode a data set into a new segment (an embedding store, resumable), then
add it to the FAISS index (built by ``faiss.index_factory``) and refresh the pool statistics
that z-scores use. An existing index is resumed, re-kinded or appended to; it refuses another
encoder or settings, loudly.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from influcoder.attribution.encode import encode
from influcoder.attribution.index import (
    FAISS_FILE,
    INDEX_FILE,
    INDEX_FORMAT,
    INDEX_VERSION,
    SEGMENTS_DIR,
    STATS_FILE,
    Index,
    check_encoder,
    faiss_params,
    import_faiss,
    new_faiss,
    read_index_meta,
)
from influcoder.attribution.settings import (
    FAISS_KINDS,
    IVF_TRAIN_PER_LIST,
    SEED,
    EncodeArguments,
)
from influcoder.encoders.backends import encoder_fingerprint, export_for_queries
from influcoder.errors import InputError, StoreError
from influcoder.io.atomic import atomic_write_bytes, atomic_write_json
from influcoder.io.samples import Fields, Sample, load_samples
from influcoder.io.stores import Store, samples_digest, setup_differences
from influcoder.similarity import compared_rows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Where a segment's samples came from, so ``filter`` can write kept rows as they were."""

    path: str | None
    format: str | None
    fields: dict
    limit: int | None = None
    split: str | None = None

    @classmethod
    def of(cls, data, fields: Fields, limit: int | None, split: str) -> Source:
        from influcoder.io.samples import FORMATS

        if isinstance(data, list) or str(data) == "-":
            return cls(None, None, asdict(fields), limit)
        path = Path(data)
        if path.exists():
            return cls(str(path.resolve()), FORMATS.get(path.suffix.lower()), asdict(fields), limit)
        return cls(str(data), "hf", asdict(fields), limit, split)


def _training_rows(stores: list[Store], n: int, want: int) -> np.ndarray:
    """A seeded random sample of ``want`` rows of the stores as they are compared (in row
    order)."""
    picked = np.sort(np.random.default_rng(SEED).choice(n, size=min(want, n), replace=False))
    out, offset = [], 0
    for store in stores:
        for start, chunk in store.iter_chunks():
            lo = offset + start
            sel = picked[(picked >= lo) & (picked < lo + len(chunk))] - lo
            out.append(compared_rows(store, chunk[sel]))
        offset += store.n
    return np.concatenate(out)


def _write_faiss(index, path: Path) -> None:
    """faiss.write_index to a temporary name, fsync, rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        import_faiss().write_index(index, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _add_rows(index, stores: list[Store]) -> None:
    for store in stores:
        for _, chunk in store.iter_chunks():
            index.add(compared_rows(store, chunk))


def _update_faiss(
    out: Path,
    stores: list[Store],
    old: dict | None,
    kind: str,
    n_old: int,
) -> dict:
    """Bring ``faiss.index`` up to date with ``stores``: extend the existing one by the rows
    past ``n_old`` when it holds exactly those of the same kind, else build it anew."""
    n = sum(s.n for s in stores)
    if kind == "flat":
        (out / FAISS_FILE).unlink(missing_ok=True)
        return {"kind": "flat", "file": None, "params": {}, "n": n}
    file = out / FAISS_FILE
    faiss = import_faiss()
    index = None
    if old is not None and old["kind"] == kind and file.is_file() and old["n"] == n_old:
        try:
            index = faiss.read_index(str(file))
        except RuntimeError:
            logger.info(f"{file} is unreadable: rebuilding it")
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
        logger.info(f"adding {n - n_old} rows to the {kind} index")
        _add_rows(index, new_stores)
    else:
        params = faiss_params(kind, n)
        dim = stores[0].dim
        index = new_faiss(kind, dim, params)
        logger.info(f"building the {kind} index over {n} rows")
        if not index.is_trained:
            want = params.get("nlist", 1) * IVF_TRAIN_PER_LIST
            index.train(_training_rows(stores, n, want))
        _add_rows(index, stores)
    _write_faiss(index, file)
    return {"kind": kind, "file": FAISS_FILE, "params": params, "n": n}


def _write_stats(out: Path, stores: list[Store]) -> None:
    """Sum and sum of outer products of the rows as compared (float64), for
    :meth:`Index.z_scores`."""
    from safetensors.numpy import save

    dim = stores[0].dim
    total, outer, count = np.zeros(dim), np.zeros((dim, dim)), 0
    for store in stores:
        for _, chunk in store.iter_chunks():
            x = compared_rows(store, chunk).astype(np.float64)
            total += x.sum(axis=0)
            outer += x.T @ x
            count += len(x)
    atomic_write_bytes(
        out / STATS_FILE,
        save({"sum": total, "sum_outer": outer, "count": np.array([count], dtype=np.int64)}),
    )


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
        return EncodeArguments(
            **{k: v for k, v in given.items() if v is not None},
            **({"encoder": encoder} if encoder else {}),
        )
    stored = EncodeArguments(**meta["arguments"])
    fixed = {
        k: given[k]
        for k in ("dtype", "max_seq_length", "shard_rows")
        if given.get(k) is not None and given[k] != getattr(stored, k)
    }
    if fixed:
        raise StoreError(
            f"the index {meta['path']} was built with "
            + ", ".join(f"{k}={getattr(stored, k)!r}" for k in fixed)
            + "; new segments must match (requested "
            + ", ".join(f"{k}={v!r}" for k, v in fixed.items())
            + ")"
        )
    free = {k: given[k] for k in ("backend", "batch_size") if given.get(k) is not None}
    return replace(stored, encoder=encoder or meta["encoder"]["name"], **free)


def _check_duplicates(out: Path, meta: dict | None, samples: list[Sample], source: str) -> None:
    new = {s.id for s in samples}
    if len(new) != len(samples):
        raise InputError("duplicate sample ids", path=source)
    for seg in meta["segments"] if meta else ():
        seen = [i for i in Store(out / SEGMENTS_DIR / seg["name"]).ids if i in new]
        if seen:
            shown = ", ".join(f"'{i}'" for i in seen[:5]) + (", ..." if len(seen) > 5 else "")
            raise InputError(
                f"{len(seen)} sample ids are already in the index (segment "
                f"{seg['name']}, from {seg['source']['path']}): {shown}. An index "
                f"holds each id once",
                path=source,
            )


def build_index(
    data,
    out: str | os.PathLike,
    encoder: str | os.PathLike | None = None,
    *,
    append: bool = False,
    approx: str | None = None,
    backend: str | None = None,
    dtype: str | None = None,
    max_seq_length: int | None = None,
    batch_size: int | None = None,
    shard_rows: int | None = None,
    fields: Fields | None = None,
    limit: int | None = None,
    split: str = "train",
    engine: str = "local",
    ray_address: str | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    device: str = "auto",
) -> Index:
    """Encode ``data`` into the index ``out`` (create it, resume it, or ``append`` to it).

    Args:
        data: a data file (``-``: JSONL on stdin), an HF dataset name, a list of
            :class:`Sample`, or a :class:`Store` (its samples).
        out: the index directory.
        encoder: an encoder directory (or what ``distill`` returned) or ``all-minilm-l6-v2``;
            for an existing index, None means the one it was built with (its fingerprint must
            match).
        append: add ``data`` as a new segment (without it, an existing index must already hold
            exactly ``data``, and the call only finishes or re-kinds it).
        approx: FAISS kind, ``flat``/``hnsw``/``ivf``; None keeps the index's (new: ``flat``).
            A different kind rebuilds ``faiss.index`` from the stored vectors.
        backend, batch_size: how to run the encoder (see
            :class:`~influcoder.attribution.settings.EncodeArguments`).
        dtype, max_seq_length, shard_rows: how vectors are made and stored; fixed once the
            index exists.
        engine, ray_address, num_workers: where shards are encoded (:mod:`influcoder.engines`).
        device: where the encoder runs (``auto``: a GPU when there is one); not a setting of
            the index.

    Example::

        >>> index = build_index("train.jsonl", "runs/index", "all-minilm-l6-v2")
        >>> index = build_index("more.jsonl", "runs/index", append=True)
    """
    if approx is not None and approx not in FAISS_KINDS:
        raise ValueError(f"approx must be one of {FAISS_KINDS}, got {approx!r}")
    out = Path(out)
    fields = fields or Fields()
    encoder = None if encoder is None else os.fspath(encoder)
    if isinstance(data, Store):
        data = data.samples
    meta = read_index_meta(out) if (out / INDEX_FILE).is_file() else None
    if meta is None and out.is_dir() and any(p.name != SEGMENTS_DIR for p in out.iterdir()):
        raise StoreError(f"{out} exists and is not an influcoder index; refusing to write into it")
    if meta is not None:
        meta["path"] = str(out)
    args = _settings(
        meta,
        encoder,
        {
            "backend": backend,
            "dtype": dtype,
            "batch_size": batch_size,
            "max_seq_length": max_seq_length,
            "shard_rows": shard_rows,
        },
    )
    fingerprint = encoder_fingerprint(args.encoder)
    if meta is not None:
        check_encoder(meta, args.encoder, fingerprint)
    samples = (
        data
        if isinstance(data, list)
        else load_samples(data, fields=fields, limit=limit, split=split)
    )
    label = "<samples>" if isinstance(data, list) else str(data)
    source = Source.of(data, fields, limit, split)
    segments = list(meta["segments"]) if meta else []
    n_old = meta["n"] if meta else 0
    digest = samples_digest(samples)

    if meta is not None and not append:
        if not (len(segments) == 1 and segments[0]["samples_sha256"] == digest):
            raise StoreError(
                f"{out} already holds an index of other data; add {label} to it "
                f"with --append, or choose another --out"
            )
        logger.info(f"{out} already holds {label}")
    else:
        _check_duplicates(out, meta, samples, label)
        name = f"{len(segments):05d}"
        seg_dir = out / SEGMENTS_DIR / name
        if (seg_dir / "manifest.json").is_file():
            pending = Store(seg_dir, allow_incomplete=True)
            if pending.manifest["samples_sha256"] != digest:
                raise StoreError(
                    f"{seg_dir} holds an unfinished segment of other data (from "
                    f"{pending.manifest['provenance'].get('source')}); rerun that "
                    f"command to finish it, or delete {seg_dir}"
                )
        seg_dir.parent.mkdir(parents=True, exist_ok=True)
        store = encode(
            samples,
            seg_dir,
            args,
            engine=engine,
            ray_address=ray_address,
            num_workers=num_workers,
            progress=progress,
            device=device,
        )
        if meta is not None and setup_differences(store.setup, meta["setup"]):
            raise StoreError(
                f"{seg_dir}: not built like the index:\n  "
                + "\n  ".join(setup_differences(meta["setup"], store.setup))
            )
        segments.append(
            {"name": name, "n": store.n, "samples_sha256": digest, "source": asdict(source)}
        )
        args = args_from_segment(store, args.encoder)

    stores = [Store(out / SEGMENTS_DIR / s["name"]) for s in segments]
    n = sum(s.n for s in stores)
    kind = approx or (meta["faiss"]["kind"] if meta else "flat")
    faiss_meta = _update_faiss(out, stores, meta["faiss"] if meta else None, kind, n_old)
    if not _stats_current(out, n):
        _write_stats(out, stores)
    if export_for_queries(args.encoder, fingerprint):
        logger.info("the encoder's ONNX export for queries is ready (fast start-up of attribute)")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_json(
        out / INDEX_FILE,
        {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "kind": "embeddings",
            "encoder": {"name": args.encoder, "fingerprint": fingerprint},
            "setup": stores[0].setup,
            "arguments": args.to_dict(),
            "dim": stores[0].dim,
            "n": n,
            "segments": segments,
            "faiss": faiss_meta,
            "created": meta["created"] if meta else now,
            "updated": now,
        },
    )
    return Index(out)


def estimate_index(
    data,
    out: str | os.PathLike,
    encoder: str | None = None,
    *,
    approx: str | None = None,
    fields: Fields | None = None,
    limit: int | None = None,
    device: str = "auto",
    **options,
):
    """What :func:`build_index` of ``data`` into ``out`` would cost (``index --dry-run``): the
    encoding as :func:`~influcoder.attribution.encode.estimate_encode` times it, plus the
    FAISS index's bytes; nothing written. ``options`` are :func:`build_index`'s encoding
    settings (``backend``, ``batch_size``, ...)."""
    from influcoder.attribution.encode import estimate_encode
    from influcoder.attribution.index import faiss_params

    out = Path(out)
    encoder = None if encoder is None else os.fspath(encoder)
    if isinstance(data, Store):
        data = data.samples
    meta = read_index_meta(out) if (out / INDEX_FILE).is_file() else None
    if meta is not None:
        meta["path"] = str(out)
    args = _settings(meta, encoder, options)
    kind = approx or (meta["faiss"]["kind"] if meta else "flat")
    if kind not in FAISS_KINDS:
        raise ValueError(f"approx must be one of {FAISS_KINDS}, got {kind!r}")

    def faiss_bytes(n: int, dim: int) -> int:
        n_all = n + (meta["n"] if meta else 0)
        params = faiss_params(kind, n_all)
        stats = 8 * dim * (dim + 1)  # the pool statistics for z-scores (float64)
        if kind == "hnsw":  # fp16 codes, the level-0 graph (2m int32), offsets and levels
            return stats + n_all * (2 * dim + 8 * params["m"] + 12)
        if kind == "ivf":  # fp16 codes and int64 ids + the float32 centroids
            return stats + n_all * (2 * dim + 8) + params["nlist"] * dim * 4
        return stats + n_all * dim * 4

    return estimate_encode(
        data, out, args, fields=fields, limit=limit, extra_storage=faiss_bytes, device=device
    )


def args_from_segment(store: Store, encoder: str) -> EncodeArguments:
    """The settings a segment was encoded with (the backend resolved)."""
    return replace(EncodeArguments(**store.manifest["provenance"]["arguments"]), encoder=encoder)
