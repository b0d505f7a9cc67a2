"""Multi-view encoders: one backbone run on several texts of each sample, one head over their
concatenation (:class:`ViewedEncoder`), and :func:`sample_encoder`, which gives every stage an
encoder of samples whatever the directory holds. The directory format is
:mod:`influcoder.encoders.directory`; why two views, ``docs/DISTILLATION.md`` ("The response on
its own").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from influcoder.encoders.directory import (
    HEAD_FILE,
    backbone_path,
    encoder_similarity,
    is_multi_view,
    read_views,
    view_texts,
)
from influcoder.errors import InflucoderError
from influcoder.io.samples import Sample, encoder_text
from influcoder.similarity import normalize_rows

#: The ``text`` of a one-view embedding store's setup: :func:`~influcoder.io.samples.encoder_text`.
TEXT_LAYOUT = "prompt\n\nresponse"


class TextEncoder:
    """What a one-view encoder (``encode(texts)``) adds: ``encode_samples``, the vectors of each
    sample's :func:`~influcoder.io.samples.encoder_text`, the call every stage makes."""

    def encode_samples(self, samples: Sequence[Sample]) -> np.ndarray:
        return self.encode([encoder_text(s) for s in samples])


class ViewedEncoder:
    """Samples -> vectors through a multi-view encoder directory (unit length unless its
    ``similarity`` is ``dot``).

    ``text_encoder(path)`` builds the backbone's text encoder (a
    :class:`~influcoder.encoders.backends.FastEncoder` or a
    :class:`~influcoder.encoders.onnx_query.LightEncoder`, any backend); this class runs it once
    per view and applies the head (module docstring). Other attributes (``backend``,
    ``max_seq_length``, ...) are the backbone encoder's.
    """

    def __init__(self, path: str | Path, text_encoder: Callable[[str], object]):
        self.views, self.head = read_views(path)
        self.similarity = encoder_similarity(str(path))
        self.name = str(path)
        self.base = text_encoder(backbone_path(path))
        if self.head.in_dim != len(self.views) * self.base.dim:
            raise InflucoderError(
                f"{Path(path) / HEAD_FILE}: the head takes "
                f"{self.head.in_dim} inputs, {len(self.views)} views of "
                f"the {self.base.dim}-dim backbone give "
                f"{len(self.views) * self.base.dim}"
            )
        self.dim = self.head.out_dim

    def encode_samples(self, samples: Sequence[Sample]) -> np.ndarray:
        """Vectors of ``samples``, in their order (``float32``, ``len x dim``)."""
        samples = list(samples)
        if not samples:
            return np.empty((0, self.dim), dtype=np.float32)
        parts = [
            normalize_rows(np.asarray(self.base.encode(texts), dtype=np.float32))
            for texts in view_texts(samples, self.views)
        ]
        out = self.head(np.hstack(parts))
        return out if self.similarity == "dot" else normalize_rows(out)

    def encode(self, texts):
        raise InflucoderError(
            f"{self.name} is a multi-view encoder ({'+'.join(self.views)}): "
            f"it encodes samples (prompt and response), not texts"
        )

    def __getattr__(self, name):
        if name == "base":  # not set yet: __init__ failed before it
            raise AttributeError(name)
        return getattr(self.base, name)


def text_layout(views: Sequence[str] = ("text",)) -> str:
    """What an embedding store's setup records as the text an encoder of ``views`` saw."""
    return " | ".join(TEXT_LAYOUT if v == "text" else v for v in views)


def sample_encoder(name: str, text_encoder: Callable[[str], object]):
    """An encoder with ``encode_samples``: a :class:`ViewedEncoder` when ``name`` is a
    multi-view directory, else ``text_encoder(name)`` (whose ``encode_samples`` encodes each
    sample's :func:`~influcoder.io.samples.encoder_text`)."""
    return ViewedEncoder(name, text_encoder) if is_multi_view(name) else text_encoder(name)
