"""A query encoder that starts in a fraction of a second: ONNX Runtime and tokenizers, no torch.

Once an encoder has been exported to ONNX (the ``onnx``/``int8`` backends of
:mod:`influcoder.encoders.backends` export it once per encoder, ``build_index`` ahead of time),
:class:`LightEncoder` runs that file with the encoder's own ``tokenizer.json``: the same
normaliser, special tokens, truncation and lower-casing as the sentence-transformers
``Transformer`` module, length-sorted batches padded to their longest text, and the exported
graph holds every module (pooling, dense head, normalisation). Its vectors are those of
``FastEncoder(backend="onnx")`` (the tests compare them). :func:`light_encoder` returns one only
when all of that holds; otherwise the caller uses
:class:`~influcoder.encoders.backends.FastEncoder`.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from influcoder.encoders.directory import encoder_similarity
from influcoder.encoders.views import TextEncoder
from influcoder.engines.batching import length_batches
from influcoder.similarity import normalize_rows

#: Module types (as modules.json names them) whose tokenizer this encoder can replay.
TRANSFORMER_TYPES = (
    "sentence_transformers.models.Transformer",
    "sentence_transformers.base.modules.transformer.Transformer",
)
ONNX_BACKENDS = ("onnx", "int8")


def onnx_runtime_available() -> bool:
    """Whether the ONNX backends can run here (found without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tokenizers"))


def transformer_dir(encoder_dir: str | Path) -> Path | None:
    """The directory of the encoder's first module if it is a ``Transformer`` with a
    ``tokenizer.json``, else None."""
    folder = Path(encoder_dir)
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        return None
    first = min(modules, key=lambda m: m.get("idx", 0)) if modules else None
    if first is None or first.get("type") not in TRANSFORMER_TYPES:
        return None
    sub = folder / first.get("path", "")
    return sub if (sub / "tokenizer.json").is_file() else None


class LightEncoder(TextEncoder):
    """Texts -> unit vectors with ONNX Runtime and tokenizers (see the module docstring).

    Args:
        encoder_dir: the sentence-transformers directory (its tokenizer is read from it).
        onnx_file: the exported model (``FastEncoder``'s export of this encoder).
        max_seq_length: tokens per text, as the index was built with.
        batch_size: texts per run of the graph.
        threads: ONNX Runtime's threads per run, which then sleep between runs instead of
            spinning; None: its default (one per core, spinning), fastest for one process
            alone. A server that runs several encodings at once on a shared machine sets 1.
    """

    def __init__(
        self,
        encoder_dir: str | Path,
        onnx_file: str | Path,
        *,
        max_seq_length: int,
        batch_size: int,
        backend: str = "onnx",
        threads: int | None = None,
    ):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        tdir = transformer_dir(encoder_dir)
        if tdir is None:
            raise ValueError(
                f"{encoder_dir}: no sentence-transformers Transformer module with a tokenizer.json"
            )
        self.name, self.backend = str(encoder_dir), backend
        self.similarity = encoder_similarity(str(encoder_dir))
        self.max_seq_length, self.batch_size = int(max_seq_length), int(batch_size)
        self._lower = _do_lower_case(tdir)
        self._tokenizer = Tokenizer.from_file(str(tdir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_seq_length)
        self._pad_id = _pad_id(tdir, self._tokenizer)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(onnx_file), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.dim = int(self._session.get_outputs()[0].shape[-1])

    def _tokens(self, texts: list[str]) -> list[list[int]]:
        texts = [t.lower() for t in texts] if self._lower else texts
        return [e.ids for e in self._tokenizer.encode_batch(texts)]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Vectors of ``texts``, in their order (``float32``, ``len(texts) x dim``): unit
        length unless ``similarity`` is ``dot``, as :class:`FastEncoder`'s."""
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self._tokens(texts)
        for idx in length_batches([len(x) for x in ids], self.batch_size):
            width = max(len(ids[j]) for j in idx)
            input_ids = np.full((len(idx), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, j in enumerate(idx):
                input_ids[row, : len(ids[j])] = ids[j]
                mask[row, : len(ids[j])] = 1
            feed = {
                "input_ids": input_ids,
                "attention_mask": mask,
                "token_type_ids": np.zeros_like(input_ids),
            }
            out[idx] = self._session.run(None, {n: feed[n] for n in self._inputs})[0]
        return out if self.similarity == "dot" else normalize_rows(out)

    __call__ = encode


def _do_lower_case(folder: Path) -> bool:
    try:
        return bool(
            json.loads((folder / "sentence_bert_config.json").read_text()).get(
                "do_lower_case", False
            )
        )
    except (OSError, ValueError):
        return False


def _pad_id(folder: Path, tokenizer) -> int:
    """The id the HF tokenizer pads with (its ``pad_token``), as sentence-transformers pads."""
    try:
        pad = json.loads((folder / "tokenizer_config.json").read_text()).get("pad_token")
    except (OSError, ValueError):
        pad = None
    if isinstance(pad, dict):
        pad = pad.get("content")
    found = tokenizer.token_to_id(pad) if isinstance(pad, str) else None
    return 0 if found is None else int(found)


def light_encoder(
    encoder_dir: str,
    onnx_file: Path,
    *,
    backend: str,
    max_seq_length: int,
    batch_size: int,
    threads: int | None = None,
) -> LightEncoder | None:
    """A :class:`LightEncoder` where one can serve (see the module docstring), else None."""
    if (
        backend not in ONNX_BACKENDS
        or not onnx_file.is_file()
        or not onnx_runtime_available()
        or transformer_dir(encoder_dir) is None
    ):
        return None
    return LightEncoder(
        encoder_dir,
        onnx_file,
        max_seq_length=max_seq_length,
        batch_size=batch_size,
        backend=backend,
        threads=threads,
    )
