"""Encoder inference on CPU, fast: a choice of backends and length-bucketed batches.

An encoder (a sentence-transformers directory) turns each text into one unit vector. Plain
float32 PyTorch is the reference; the faster backends are judged against it by the Spearman
correlation of the cosine scores they produce (``benchmarks/bench_attribution.py`` measures it
on the real MiniLM, ``tests/test_encode.py`` on a tiny one):

=========  ==============================================  =====================================
backend    what runs                                        fidelity / needs
=========  ==============================================  =====================================
``torch``  the sentence-transformers modules in float32     the reference
``bf16``   weights and activations in bfloat16 (the        Spearman >= 0.9999 on MiniLM; fast
           output renormalised in float32): BERT encoders   only where the CPU has bf16 units
           with mean pooling run one fused pass             (AVX512-BF16, AMX) or on a GPU
           (:mod:`influcoder.encoders.bert_bf16`), others the
           sentence-transformers modules
``onnx``   the model exported once to ONNX, run by ONNX     equal to float32 up to 1e-6; needs
           Runtime with its graph optimisations             ``onnx`` and ``onnxruntime``
``int8``   that ONNX model with int8 weights (ONNX          Spearman about 0.99 on MiniLM, the
           Runtime dynamic quantisation, per channel)       fastest; needs the same packages
``auto``   ``bf16`` on a GPU or where torch reports        (the default)
           native bf16 support, else ``torch``
=========  ==============================================  =====================================

PyTorch's own dynamic int8 quantisation (``quantize_dynamic`` of the Linear layers) is not
offered: on MiniLM its scores correlate only ~0.93 with float32 and it is barely faster.

Batches: texts are sorted by token count, cut into batches of similar length
(:func:`~influcoder.engines.batching.length_batches`: at most 20% of a batch is padding), encoded, and
put back in input order. A text's vector does not
depend on the other texts of its batch (the attention mask hides the padding), so the order
changes only the speed.

ONNX files are exported once per encoder (keyed by the encoder's fingerprint) into
``$INFLUCODER_CACHE/onnx`` (default ``~/.cache/influcoder/onnx``), atomically.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np

from influcoder.encoders.directory import backbone_path, is_multi_view, resolve_encoder
from influcoder.encoders.settings import BACKENDS, DEFAULT_BATCH_SIZE
from influcoder.encoders.views import TextEncoder, ViewedEncoder
from influcoder.engines.batching import length_batches, token_lengths
from influcoder.errors import InflucoderError, MissingPackageError
from influcoder.io.models import cache_dir
from influcoder.similarity import normalize_rows

ONNX_OPSET = 17


#: Files of an encoder directory that do not change what it computes.
FINGERPRINT_IGNORED = ("README.md",)


def encoder_fingerprint(name: str) -> str:
    """``sha256:`` over every file of the encoder directory (relative path and bytes, sorted),
    except :data:`FINGERPRINT_IGNORED` and hidden files; ``hub:NAME`` for a hub id."""
    path = resolve_encoder(name)
    folder = Path(path)
    if not folder.is_dir():
        return f"hub:{path}"
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.name not in FINGERPRINT_IGNORED
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(folder).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


def resolve_backend(backend: str, device: str = "cpu") -> str:
    """The backend ``auto`` stands for on ``device`` of this machine (a ``--device`` value;
    other backend names are returned as given): ``bf16`` on a GPU or a CPU with bf16 units."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    import torch

    from influcoder.io.devices import resolve_device

    native_bf16 = resolve_device(device).type == "cuda" or (
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
    return "bf16" if native_bf16 else "torch"


def onnx_file(fingerprint: str, backend: str) -> Path:
    """Where the ONNX export of the encoder with ``fingerprint`` for ``backend`` is cached."""
    return cache_dir() / "onnx" / f"{fingerprint.split(':', 1)[1][:32]}-{backend}" / "model.onnx"


def resolve_query_backend(backend: str, device: str = "cpu") -> str:
    """The backend ``auto`` stands for when encoding queries: ``onnx`` (float32-exact, and it
    starts without torch, :mod:`influcoder.encoders.onnx_query`; always on the CPU) where ONNX
    Runtime and the ONNX exporter are installed, else what :func:`resolve_backend` says."""
    from influcoder.encoders.onnx_query import onnx_runtime_available

    if backend == "auto" and onnx_runtime_available() and importlib.util.find_spec("onnx"):
        return "onnx"
    return resolve_backend(backend, device)


def query_encoder(
    name: str,
    *,
    backend: str = "auto",
    fingerprint: str | None = None,
    max_seq_length: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    device: str = "cpu",
):
    """The encoder for queries: the torch-free :class:`~influcoder.encoders.onnx_query.
    LightEncoder` where it can serve (an ONNX backend whose export is cached; ``threads``: its
    ONNX Runtime threads; always on the CPU), else a :class:`FastEncoder` on ``device``. Both
    expose ``encode(texts)``, ``encode_samples(samples)``, ``dim``, ``name`` and ``backend``. A
    multi-view encoder (:mod:`influcoder.encoders.views`) is a
    :class:`~influcoder.encoders.views.ViewedEncoder` over its backbone's query encoder."""
    from influcoder.encoders.onnx_query import light_encoder

    if is_multi_view(path := resolve_encoder(name)):
        return ViewedEncoder(
            path,
            lambda path: query_encoder(
                path,
                backend=backend,
                max_seq_length=max_seq_length,
                batch_size=batch_size,
                threads=threads,
                device=device,
            ),
        )
    backend = resolve_query_backend(backend, device)
    fingerprint = fingerprint or encoder_fingerprint(name)
    if fingerprint.startswith("sha256:"):
        light = light_encoder(
            resolve_encoder(name),
            onnx_file(fingerprint, backend),
            backend=backend,
            max_seq_length=max_seq_length,
            batch_size=batch_size,
            threads=threads,
        )
        if light is not None:
            return light
    return FastEncoder(
        name, backend=backend, max_seq_length=max_seq_length, batch_size=batch_size, device=device
    )


def export_for_queries(name: str, fingerprint: str) -> bool:
    """Export the encoder to ONNX ahead of the first query (once per encoder), where queries
    will use it (:func:`resolve_query_backend`); True if an export is there afterwards."""
    if is_multi_view(path := resolve_encoder(name)):  # queries run its backbone
        name = backbone_path(path)
        fingerprint = encoder_fingerprint(name)
    backend = resolve_query_backend("auto")
    if backend not in ("onnx", "int8") or not fingerprint.startswith("sha256:"):
        return False
    if not onnx_file(fingerprint, backend).is_file():
        FastEncoder(name, backend=backend)
    return True


def _onnx_packages(backend: str):
    try:
        import onnxruntime
    except ImportError:
        raise MissingPackageError(
            "onnxruntime",
            f"The '{backend}' encoder backend",
            install="pip install 'influcoder[onnx]' onnx",
        ) from None
    return onnxruntime


class FastEncoder(TextEncoder):
    """Texts -> vectors (``float32``, ``n x dim``) with one backend: unit vectors, unless the
    encoder compares by dot product (``similarity``, from
    :func:`~influcoder.encoders.directory.encoder_similarity`).

    Args:
        encoder: an encoder directory or the bundled ``all-minilm-l6-v2``.
        backend: one of :data:`BACKENDS` (see the module docstring).
        max_seq_length: tokens per text (longer texts are cut); None keeps the encoder's own.
        batch_size: texts per forward pass.
        device: a ``--device`` value: ``auto`` (a GPU when there is one), ``cpu``, ``cuda``,
            ``cuda:N`` (:mod:`influcoder.io.devices`); the ONNX backends always run on the
            CPU.

    Example::

        >>> enc = FastEncoder("all-minilm-l6-v2", backend="bf16")
        >>> vectors = enc.encode(["What is the capital of France?\\n\\nParis."])
        >>> vectors.shape
        (1, 384)
    """

    def __init__(
        self,
        encoder: str,
        *,
        backend: str = "auto",
        max_seq_length: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str = "cpu",
    ):
        import torch

        from influcoder.encoders.directory import encoder_similarity, load_encoder
        from influcoder.io.devices import resolve_device

        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if max_seq_length is not None and max_seq_length < 2:
            raise ValueError("max_seq_length must be >= 2")
        self.name = encoder
        self.backend = resolve_backend(backend, device)
        self.batch_size = batch_size
        if self.backend in ("onnx", "int8"):
            device = "cpu"
        self.device = resolve_device(device)
        self.model = load_encoder(encoder, device=str(self.device)).eval()
        self.similarity = encoder_similarity(encoder)
        if max_seq_length is not None:
            self.model.max_seq_length = max_seq_length
        if self.model.max_seq_length is None:
            raise InflucoderError(f"the encoder '{encoder}' sets no max_seq_length; give one")
        self.max_seq_length = int(self.model.max_seq_length)
        self.dim = int(self.model.get_embedding_dimension())
        self._session = None
        self._fused = None
        from influcoder.encoders.bert_bf16 import FusedBert, why_not_fusable

        if self.backend == "bf16" and why_not_fusable(self.model) is None:
            self._fused = FusedBert(self.model, torch.bfloat16)
        elif self.backend == "bf16":
            self.model.to(torch.bfloat16)
        elif self.backend in ("onnx", "int8"):
            self._session = self._onnx_session()

    # -- ONNX
    def _input_names(self) -> list[str]:
        return [k for k, v in self.model.preprocess(["a"]).items() if hasattr(v, "dtype")]

    def _onnx_file(self) -> Path:
        """Export (once) and return the ONNX file for this encoder and backend."""
        from influcoder.io.atomic import atomic_write_dir

        target = onnx_file(encoder_fingerprint(self.name), self.backend)
        if target.is_file():
            return target
        target.parent.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_dir(target.parent, self._export)
        return target

    def _export(self, folder: Path) -> None:
        import torch

        try:
            import onnx  # noqa: F401  (torch's exporter needs it)
        except ImportError:
            raise MissingPackageError(
                "onnx",
                f"Exporting the encoder for the '{self.backend}' backend",
                install="pip install onnx",
            ) from None
        names = self._input_names()
        model = self.model

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *inputs):
                return self.model(dict(zip(names, inputs)))["sentence_embedding"]

        features = self.model.preprocess(["an example text", "another"])
        axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"embedding": {0: "batch"}}
        fp32 = folder / ("model.onnx" if self.backend == "onnx" else "fp32.onnx")
        with torch.inference_mode():
            torch.onnx.export(
                Wrapper().eval(),
                tuple(features[n] for n in names),
                str(fp32),
                dynamo=False,
                input_names=names,
                output_names=["embedding"],
                dynamic_axes=axes,
                opset_version=ONNX_OPSET,
            )
        if self.backend == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                str(fp32), str(folder / "model.onnx"), per_channel=True, weight_type=QuantType.QInt8
            )
            fp32.unlink()

    def _onnx_session(self):
        ort = _onnx_packages(self.backend)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(
            str(self._onnx_file()), options, providers=["CPUExecutionProvider"]
        )

    # -- encoding
    def _forward(self, texts: list[str]) -> np.ndarray:
        import torch

        features = self.model.preprocess(texts)
        if self._fused is not None:
            return (
                self._fused(
                    features["input_ids"],
                    features["attention_mask"],
                    features.get("token_type_ids"),
                )
                .cpu()
                .numpy()
            )
        if self._session is not None:
            names = [i.name for i in self._session.get_inputs()]
            return self._session.run(None, {n: features[n].numpy() for n in names})[0]
        features = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in features.items()}
        with torch.inference_mode():
            out = self.model(features)["sentence_embedding"]
        return out.float().cpu().numpy()

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Tokens per text after truncation (what batches are sorted by)."""
        return token_lengths(self.model.tokenizer, texts, self.max_seq_length)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Vectors of ``texts``, in their order (``float32``, ``len(texts) x dim``): unit
        length unless ``similarity`` is ``dot``."""
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        for idx in length_batches(self.token_lengths(texts), self.batch_size):
            out[idx] = self._forward([texts[j] for j in idx])
        return out if self.similarity == "dot" else normalize_rows(out)

    __call__ = encode
