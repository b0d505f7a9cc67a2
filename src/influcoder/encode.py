"""``encode``: a data set -> a store of encoder embeddings (``kind="embeddings"``).

The same store format as gradient stores (:mod:`influcoder.store`), so ``influcoder score``
and :func:`influcoder.open_store` work on both. Each sample's text is
:func:`~influcoder.data.encoder_text` (prompt, blank line, response), encoded by
:class:`~influcoder.fast_encoder.FastEncoder` into a unit vector.

Setup (what must match for two embedding stores to be comparable)::

    {"encoder": {"fingerprint": "sha256:..."}, "text": "prompt\\n\\nresponse",
     "max_seq_length": 256, "normalized": true, "storage": "float16"}

The backend (``torch``/``bf16``/``onnx``/``int8``) is not part of the setup: every backend
approximates the same float32 vectors (see :mod:`influcoder.fast_encoder`), so a query encoded
with one is comparable with a pool encoded with another. It is recorded in the provenance,
and an interrupted store resumes only with the settings (backend included) it was started
with, so its vectors never mix two backends.

Storage: ``float16`` (default; 2 bytes per dimension), ``float32``, or ``int8`` (1 byte per
dimension): each row is scaled so that its largest coordinate is +-127 and rounded,
``q = round(127 * x / max|x|)``. The per-row scale is not kept: scores are cosines, and
rows are renormalised before every dot product, so a row's scale never matters. The
rounding error of each coordinate is at most ``max|x| / 254``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .constants import DEFAULT_ENCODER, MANIFEST_NAME
from .data import Fields, encoder_text, load_samples
from .errors import InputError, StoreError
from .fast_encoder import (BACKENDS, DEFAULT_BATCH_SIZE, FastEncoder, encoder_fingerprint,
                           resolve_backend)
from .store import Store, StoreWriter, check_resumable, package_versions

KIND = "embeddings"
TEXT_LAYOUT = "prompt\n\nresponse"
STORAGE_DTYPES = ("float16", "float32", "int8")
#: Rows per shard of an embedding store: the unit of resumption and of engine work.
DEFAULT_EMBEDDING_SHARD_ROWS = 1024
INT8_MAX = 127


@dataclass
class EncodeArguments:
    """How embeddings are made (``influcoder encode`` and ``influcoder index``)."""

    encoder: str = field(default=DEFAULT_ENCODER, metadata={
        "help": "encoder: a sentence-transformers directory or 'all-minilm-l6-v2' (bundled)"})
    backend: str = field(default="auto", metadata={
        "help": "encoder inference: torch (float32 reference), bf16, onnx, int8, or auto "
                "(bf16 where the CPU has bf16 units, else torch)"})
    max_seq_length: int | None = field(default=None, metadata={
        "help": "tokens per text; longer texts are cut (default: the encoder's own)"})
    batch_size: int = field(default=DEFAULT_BATCH_SIZE, metadata={"help": "texts per batch"})
    dtype: str = field(default="float16", metadata={
        "help": "stored dtype: float16, float32 or int8 (per-row absmax scaling)"})
    shard_rows: int = field(default=DEFAULT_EMBEDDING_SHARD_ROWS, metadata={
        "help": "rows per store shard (the unit of resumption and of engine work)"})

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.dtype not in STORAGE_DTYPES:
            raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {self.dtype!r}")
        if self.batch_size < 1 or self.shard_rows < 1:
            raise ValueError("batch_size and shard_rows must be >= 1")
        if self.max_seq_length is not None and self.max_seq_length < 2:
            raise ValueError("max_seq_length must be >= 2")

    def to_dict(self) -> dict:
        return asdict(self)


def quantize_int8(x: np.ndarray) -> np.ndarray:
    """Per-row absmax int8: ``round(127 * x / max|x|)`` (see the module docstring)."""
    x = np.asarray(x, dtype=np.float32)
    peak = np.maximum(np.abs(x).max(axis=1, keepdims=True), np.finfo(np.float32).tiny)
    return np.clip(np.rint(x * (INT8_MAX / peak)), -INT8_MAX, INT8_MAX).astype(np.int8)


def to_storage(rows: np.ndarray, dtype: str) -> np.ndarray:
    """Unit float32 rows as stored."""
    return quantize_int8(rows) if dtype == "int8" else rows.astype(dtype)


def embedding_setup(fingerprint: str, max_seq_length: int, dtype: str) -> dict:
    return {"encoder": {"fingerprint": fingerprint}, "text": TEXT_LAYOUT,
            "max_seq_length": int(max_seq_length), "normalized": True, "storage": dtype}


@dataclass(frozen=True)
class EncoderWorker:
    """Builds an encoder in a worker process (picklable, for the Ray engine); refuses to run
    if the files it finds there are not the ones the driver fingerprinted."""

    encoder: str
    fingerprint: str
    backend: str
    max_seq_length: int
    batch_size: int

    def __call__(self):
        found = encoder_fingerprint(self.encoder)
        if found != self.fingerprint:
            raise StoreError(f"the encoder '{self.encoder}' on this worker has fingerprint "
                             f"{found}, the driver's has {self.fingerprint}")
        return FastEncoder(self.encoder, backend=self.backend, max_seq_length=self.max_seq_length,
                           batch_size=self.batch_size).encode


def args_from_store(store: Store, **overrides) -> EncodeArguments:
    """The settings an existing embedding store was made with."""
    if store.kind != KIND:
        raise StoreError(f"{store.path}: holds {store.kind}, not {KIND}")
    return replace(EncodeArguments(**store.manifest["provenance"]["arguments"]), **overrides)


def encode(data, out: str | os.PathLike, args: EncodeArguments | None = None, *,
           fields: Fields | None = None,
           limit: int | None = None, engine: str = "local", ray_address: str | None = None,
           num_workers: int | None = None, progress: bool = True, log=print) -> Store:
    """Encode ``data`` (a path, ``-``, or a list of :class:`Sample`) into the embedding store
    ``out``, resuming it if an earlier run was interrupted.

    Args:
        data: the samples.
        out: the store directory.
        args: settings (:class:`EncodeArguments`); a store being resumed keeps its own, except
            the encoder's name (its fingerprint must still match). ``backend="auto"`` is
            recorded as the backend it resolved to. A store is resumed only with the settings
            it was started with.
        engine, ray_address, num_workers: where shards are computed
            (:mod:`influcoder.engines`).

    Example::

        >>> store = encode("train.jsonl", "runs/train-emb")
        >>> store.vectors().shape
        (1000, 384)
    """
    from .engines import fill_store

    out = Path(out)
    args = args or EncodeArguments()
    args = replace(args, backend=resolve_backend(args.backend))
    if (out / MANIFEST_NAME).is_file():
        # Resuming: only the very same run may continue a store.
        stored = args_from_store(Store(out, allow_incomplete=True), encoder=args.encoder)
        check_resumable(out, stored.to_dict(), args.to_dict(), "encoded")
    samples = data if isinstance(data, list) else load_samples(data, fields=fields, limit=limit)
    if not samples:
        raise InputError("no samples to encode")
    encoder = FastEncoder(args.encoder, backend=args.backend, max_seq_length=args.max_seq_length,
                          batch_size=args.batch_size)
    fingerprint = encoder_fingerprint(args.encoder)
    setup = embedding_setup(fingerprint, encoder.max_seq_length, args.dtype)
    writer = StoreWriter(out, kind=KIND, setup=setup, samples=samples, dim=encoder.dim,
                         dtype=args.dtype, shard_rows=args.shard_rows,
                         provenance={"arguments": args.to_dict(),
                                     "source": "<samples>" if isinstance(data, list) else str(data),
                                     "encoder_name": args.encoder, "versions": package_versions(
                                         "sentence-transformers", "onnxruntime")})
    if engine == "local":
        def factory():
            return encoder.encode
    else:
        factory = EncoderWorker(args.encoder, fingerprint, encoder.backend,
                                encoder.max_seq_length, args.batch_size)
    return fill_store(writer, factory,
                      lambda start, stop: [encoder_text(s) for s in samples[start:stop]],
                      desc="encode", engine=engine, address=ray_address,
                      num_workers=num_workers, convert=lambda rows: to_storage(rows, args.dtype),
                      progress=progress, log=log)


