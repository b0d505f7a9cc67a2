"""``encode``: a data set -> a store of encoder embeddings (``kind="embeddings"``).

The same store format as gradient stores (:mod:`influcoder.io.stores`), so ``influcoder score``
and :func:`influcoder.open_store` work on both. Each sample's text is
:func:`~influcoder.io.samples.encoder_text` (prompt, blank line, response), encoded by
:class:`~influcoder.encoders.backends.FastEncoder` into a unit vector (a multi-view encoder,
:mod:`influcoder.encoders.views`, runs its backbone on each view and its head on them; the
setup's ``text`` then names the views, e.g. ``"prompt\\n\\nresponse | response"``).

Setup (what must match for two embedding stores to be comparable)::

    {"encoder": {"fingerprint": "sha256:..."}, "text": "prompt\\n\\nresponse",
     "max_seq_length": 256, "normalized": true, "storage": "float16"}

The backend (``torch``/``bf16``/``onnx``/``int8``) is not part of the setup: every backend
approximates the same float32 vectors (see :mod:`influcoder.encoders.backends`), so a query encoded
with one is comparable with a pool encoded with another. It is recorded in the provenance,
and an interrupted store resumes only with the settings (backend included) it was started
with, so its vectors never mix two backends.

Storage: ``float16`` (default; 2 bytes per dimension), ``float32``, or ``int8`` (1 byte per
dimension): each row is scaled so that its largest coordinate is +-127 and rounded,
``q = round(127 * x / max|x|)``. The per-row scale is not kept: scores are cosines, and
rows are renormalised before every dot product, so a row's scale never matters. The
rounding error of each coordinate is at most ``max|x| / 254``.

An encoder that compares by dot product (``similarity: dot``, e.g. a distilled encoder with
its linear head, :func:`~influcoder.encoders.directory.encoder_similarity`) stores its vectors
as they are, lengths included, and the setup says ``"normalized": false``: every reader
(:mod:`influcoder.attribution.index`, ``score``, ``evaluate``) then leaves the rows unscaled.
``int8`` storage drops each row's scale, so it is refused for such an encoder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from influcoder.attribution.settings import EncodeArguments
from influcoder.encoders.backends import (
    FastEncoder,
    encoder_fingerprint,
    resolve_backend,
)
from influcoder.encoders.views import TEXT_LAYOUT, sample_encoder, text_layout
from influcoder.errors import InputError
from influcoder.io.devices import DEFAULT_DEVICE
from influcoder.io.estimate import DEFAULT_ESTIMATE_ROWS, Estimate, estimate_job
from influcoder.io.job import CheckedWorker, Plan, StoreJob, run_job
from influcoder.io.layout import MANIFEST_NAME
from influcoder.io.samples import Fields, encoder_text
from influcoder.io.stores import Store, package_versions

KIND = "embeddings"


INT8_MAX = 127


def quantize_int8(x: np.ndarray) -> np.ndarray:
    """Per-row absmax int8: ``round(127 * x / max|x|)`` (see the module docstring)."""
    x = np.asarray(x, dtype=np.float32)
    peak = np.maximum(np.abs(x).max(axis=1, keepdims=True), np.finfo(np.float32).tiny)
    return np.clip(np.rint(x * (INT8_MAX / peak)), -INT8_MAX, INT8_MAX).astype(np.int8)


def to_storage(rows: np.ndarray, dtype: str) -> np.ndarray:
    """Unit float32 rows as stored."""
    return quantize_int8(rows) if dtype == "int8" else rows.astype(dtype)


def embedding_setup(
    fingerprint: str,
    max_seq_length: int,
    dtype: str,
    text: str = TEXT_LAYOUT,
    normalized: bool = True,
) -> dict:
    return {
        "encoder": {"fingerprint": fingerprint},
        "text": text,
        "max_seq_length": int(max_seq_length),
        "normalized": bool(normalized),
        "storage": dtype,
    }


@dataclass(frozen=True)
class EncoderWorker(CheckedWorker):
    """Builds an encoder in a worker process (see :class:`CheckedWorker`)."""

    what: ClassVar[str] = "encoder"
    encoder: str
    backend: str
    max_seq_length: int
    batch_size: int
    #: ``cpu`` or ``cuda`` (the GPU Ray gave this actor)
    device: str = "cpu"

    def load(self):
        return encoder_fingerprint(self.encoder), sample_encoder(
            self.encoder,
            lambda path: FastEncoder(
                path,
                backend=self.backend,
                max_seq_length=self.max_seq_length,
                batch_size=self.batch_size,
                device=self.device,
            ),
        ).encode_samples


class EncodeJob(StoreJob):
    """The embedding stage as a store-filling job (:mod:`influcoder.io.job`). A store being
    resumed keeps its settings, except the encoder's name (its fingerprint must still match);
    ``backend="auto"`` is recorded as the backend it resolved to on ``device`` (a ``--device``
    value, :mod:`influcoder.io.devices`: where the encoder runs, not part of the settings)."""

    kind, desc, made, settings = KIND, "encode", "encoded", EncodeArguments
    renamable = ("encoder",)

    def __init__(self, args: EncodeArguments, device: str = DEFAULT_DEVICE, dry_run: bool = False):
        super().__init__(replace(args, backend=resolve_backend(args.backend, device)), dry_run)
        self.device = device

    def plan(self, samples, source: str, out: Path) -> Plan:
        if not samples:
            raise InputError("no samples to encode")
        from influcoder.io.devices import describe_device

        args = self.args
        encoder = sample_encoder(
            args.encoder,
            lambda path: FastEncoder(
                path,
                backend=args.backend,
                max_seq_length=args.max_seq_length,
                batch_size=args.batch_size,
                device=self.device,
            ),
        )
        fingerprint = encoder_fingerprint(args.encoder)
        if encoder.similarity == "dot" and args.dtype == "int8":
            raise InputError(
                f"{args.encoder} compares its vectors by dot product, and int8 "
                f"storage drops each vector's length: use --dtype float16"
            )
        gpu = encoder.device.type == "cuda"
        return Plan(
            setup=embedding_setup(
                fingerprint,
                encoder.max_seq_length,
                args.dtype,
                text_layout(getattr(encoder, "views", ("text",))),
                normalized=encoder.similarity != "dot",
            ),
            dim=encoder.dim,
            dtype=args.dtype,
            shard_rows=args.shard_rows,
            local=lambda: encoder.encode_samples,
            remote=lambda: EncoderWorker(
                fingerprint,
                args.encoder,
                encoder.backend,
                encoder.max_seq_length,
                args.batch_size,
                "cuda" if gpu else "cpu",
            ),
            gpus_per_worker=int(gpu),
            payload=lambda start, stop: samples[start:stop],
            convert=lambda rows: to_storage(rows, args.dtype),
            provenance={
                "encoder_name": args.encoder,
                "device": describe_device(encoder.device),
                "versions": package_versions("sentence-transformers", "onnxruntime"),
            },
            lengths=lambda: encoder.token_lengths([encoder_text(s) for s in samples]),
        )


def encode(
    data,
    out: str | os.PathLike,
    args: EncodeArguments | None = None,
    *,
    fields: Fields | None = None,
    limit: int | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    device: str = DEFAULT_DEVICE,
) -> Store:
    """Encode ``data`` (a path, ``-``, or a list of :class:`Sample`) into the embedding store
    ``out``, resuming it if an earlier run was interrupted.

    Args:
        data: the samples.
        out: the store directory.
        args: settings (:class:`EncodeArguments`); see :class:`EncodeJob` for resuming
            (``backend="auto"`` resumes a store with the backend it was begun with).
        engine, ray_address, num_workers: where shards are computed
            (:mod:`influcoder.engines`).
        device: where the encoder runs (``auto``: a GPU when there is one).

    Example::

        >>> store = encode("train.jsonl", "runs/train-emb")
        >>> store.vectors().shape
        (1000, 384)
    """
    args = args or EncodeArguments()
    if args.backend == "auto" and (Path(out) / MANIFEST_NAME).is_file():
        # auto resumes a store with the backend it was begun with, which auto may have
        # resolved otherwise on another machine or device (bf16 on a GPU, torch on a CPU)
        stored = Store(out, allow_incomplete=True).manifest["provenance"]["arguments"]
        args = replace(args, backend=stored.get("backend", "auto"))
    return run_job(
        EncodeJob(args, device),
        data,
        out,
        fields=fields,
        limit=limit,
        engine=engine,
        ray_address=ray_address,
        num_workers=num_workers,
        progress=progress,
    )


def estimate_encode(
    data,
    out: str | os.PathLike,
    args: EncodeArguments | None = None,
    *,
    fields: Fields | None = None,
    limit: int | None = None,
    rows: int = DEFAULT_ESTIMATE_ROWS,
    extra_storage=None,
    device: str = DEFAULT_DEVICE,
) -> Estimate:
    """What :func:`encode` with these arguments would cost (``encode --dry-run``): the encoder
    loaded and ``rows`` samples encoded; nothing written (:mod:`influcoder.io.estimate`)."""
    return estimate_job(
        EncodeJob(args or EncodeArguments(), device, dry_run=True),
        data,
        out,
        fields=fields,
        limit=limit,
        rows=rows,
        extra_storage=extra_storage,
    )
