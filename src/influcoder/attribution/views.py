"""Multi-view encoders: one backbone run on several texts of each sample, one head over their
concatenation.

The ground truth is the gradient of the *response* loss, but a one-view encoder sees the
prompt and the response together, mean-pooled, and a five-token answer is then a few percent
of what it averages. A second pass over the response alone, concatenated with the first and
mapped by the ridge head (:mod:`influcoder.distill.head`), measured better at every size
where the head is fitted on enough samples (``docs/DISTILLATION.md``, "The response on its
own"). ``distill --views`` chooses between one view and two by the head's cross-validation.

Views (:data:`VIEWS`): ``text`` is :func:`~influcoder.io.samples.encoder_text` (prompt, blank
line, response), ``response`` the response alone.

A multi-view encoder is a directory::

    influcoder_views.json   {"format": "influcoder-views", "version": 1,
                             "views": ["text", "response"], "backbone": "backbone",
                             "head": "head.safetensors", "similarity": "dot"}
    backbone/               a plain sentence-transformers directory (the encoder every view runs)
    head.safetensors        the head's tensors (float32), :mod:`influcoder.attribution.heads`:
                            linear "weight" [out, views * backbone dim], "bias" [out], or
                            with "head_kind": "rbf" and "gamma" in the views file, an RBF
                            kernel head's "anchors", "coef", "bias"

Each view's backbone output is scaled to unit length (as every text encoder here returns it),
the views are concatenated in the listed order and mapped by the head; the result
is scaled to unit length again unless ``similarity`` (optional, ``cosine`` when absent) is
``dot``, in which case its length is kept and indexes compare by dot product
(:func:`~influcoder.attribution.encoders.encoder_similarity`). The backbone runs with any
backend (:mod:`influcoder.attribution.backends`, :mod:`influcoder.attribution.light`), so
ONNX, int8 and bf16 serve a multi-view encoder as they serve its backbone. There is no
``modules.json`` at the top, so ``SentenceTransformer`` refuses the directory instead of
silently computing the backbone's vectors without the head.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from influcoder.attribution.heads import HeadMap, read_head, save_head
from influcoder.errors import InflucoderError
from influcoder.groundtruth.influence import normalize_rows
from influcoder.io.samples import Sample, encoder_text

VIEWS_FILE = "influcoder_views.json"
VIEWS_FORMAT, VIEWS_VERSION = "influcoder-views", 1
BACKBONE_DIR, HEAD_FILE = "backbone", "head.safetensors"
#: The ``text`` of a one-view embedding store's setup: :func:`~influcoder.io.samples.encoder_text`.
TEXT_LAYOUT = "prompt\n\nresponse"

#: What each view shows the backbone of a sample.
VIEWS: dict[str, Callable[[Sample], str]] = {
    "text": encoder_text,
    "response": lambda s: s.response,
}


def view_texts(samples: Sequence[Sample], views: Sequence[str]) -> list[list[str]]:
    """Per view, the texts of ``samples`` in their order."""
    return [[VIEWS[v](s) for s in samples] for v in views]


def is_multi_view(path: str | Path) -> bool:
    return (Path(path) / VIEWS_FILE).is_file()


def backbone_path(path: str | Path) -> str:
    return str(Path(path) / BACKBONE_DIR)


def read_views(path: str | Path) -> tuple[tuple[str, ...], HeadMap]:
    """``(views, head)`` of the multi-view encoder at ``path``; an :class:`InflucoderError`
    naming the file and the field when they are not valid."""
    spec_file = Path(path) / VIEWS_FILE
    try:
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InflucoderError(f"{spec_file}: not readable JSON ({e})") from None
    if not isinstance(spec, dict) or spec.get("format") != VIEWS_FORMAT:
        raise InflucoderError(f"{spec_file}: field 'format' must be {VIEWS_FORMAT!r}")
    if spec.get("version") != VIEWS_VERSION:
        raise InflucoderError(f"{spec_file}: field 'version' is {spec.get('version')!r}; this "
                              f"influcoder reads version {VIEWS_VERSION}")
    views = spec.get("views")
    if (not isinstance(views, list) or not views or len(set(views)) != len(views)
            or any(v not in VIEWS for v in views)):
        raise InflucoderError(f"{spec_file}: field 'views' must be a list of distinct views "
                              f"from {sorted(VIEWS)}, got {views!r}")
    if spec.get("backbone") != BACKBONE_DIR or spec.get("head") != HEAD_FILE:
        raise InflucoderError(f"{spec_file}: fields 'backbone' and 'head' must be "
                              f"{BACKBONE_DIR!r} and {HEAD_FILE!r}")
    head_file = Path(path) / HEAD_FILE
    head = read_head(spec, spec_file, head_file)
    if head.in_dim % len(views):
        raise InflucoderError(f"{head_file}: a head of {head.in_dim} inputs does not fit "
                              f"{len(views)} views")
    return tuple(views), head


def save_multi_view(folder: Path, backbone, views: Sequence[str], head: HeadMap,
                    similarity: str = "cosine") -> None:
    """Write a multi-view encoder into the (empty, new) ``folder``: ``backbone`` (a
    ``SentenceTransformer``) saved under ``backbone/``, the head, the views file last;
    ``similarity`` is how its vectors are compared (``cosine`` or ``dot``)."""
    from influcoder.attribution.encoders import SIMILARITIES

    if any(v not in VIEWS for v in views):
        raise ValueError(f"unknown views {list(views)}; known: {sorted(VIEWS)}")
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    backbone.save(backbone_path(folder))
    head_fields = save_head(head, folder / HEAD_FILE)
    (folder / VIEWS_FILE).write_text(json.dumps(
        {"format": VIEWS_FORMAT, "version": VIEWS_VERSION, "views": list(views),
         "backbone": BACKBONE_DIR, "head": HEAD_FILE, **head_fields, "similarity": similarity},
        indent=2) + "\n", encoding="utf-8")


class TextEncoder:
    """What a one-view encoder (``encode(texts)``) adds: ``encode_samples``, the vectors of each
    sample's :func:`~influcoder.io.samples.encoder_text`, the call every stage makes."""

    def encode_samples(self, samples: Sequence[Sample]) -> np.ndarray:
        return self.encode([encoder_text(s) for s in samples])


class ViewedEncoder:
    """Samples -> vectors through a multi-view encoder directory (unit length unless its
    ``similarity`` is ``dot``).

    ``text_encoder(path)`` builds the backbone's text encoder (a
    :class:`~influcoder.attribution.backends.FastEncoder` or a
    :class:`~influcoder.attribution.light.LightEncoder`, any backend); this class runs it once
    per view and applies the head (module docstring). Other attributes (``backend``,
    ``max_seq_length``, ...) are the backbone encoder's.
    """

    def __init__(self, path: str | Path, text_encoder: Callable[[str], object]):
        from influcoder.attribution.encoders import encoder_similarity

        self.views, self.head = read_views(path)
        self.similarity = encoder_similarity(str(path))
        self.name = str(path)
        self.base = text_encoder(backbone_path(path))
        if self.head.in_dim != len(self.views) * self.base.dim:
            raise InflucoderError(f"{Path(path) / HEAD_FILE}: the head takes "
                                  f"{self.head.in_dim} inputs, {len(self.views)} views of "
                                  f"the {self.base.dim}-dim backbone give "
                                  f"{len(self.views) * self.base.dim}")
        self.dim = self.head.out_dim

    def encode_samples(self, samples: Sequence[Sample]) -> np.ndarray:
        """Vectors of ``samples``, in their order (``float32``, ``len x dim``)."""
        samples = list(samples)
        if not samples:
            return np.empty((0, self.dim), dtype=np.float32)
        parts = [normalize_rows(np.asarray(self.base.encode(texts), dtype=np.float32))
                 for texts in view_texts(samples, self.views)]
        out = self.head(np.hstack(parts))
        return out if self.similarity == "dot" else normalize_rows(out)

    def encode(self, texts):
        raise InflucoderError(f"{self.name} is a multi-view encoder ({'+'.join(self.views)}): "
                              f"it encodes samples (prompt and response), not texts")

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
