"""The dequantised copy of a GGUF decoder. transformers turns a ``.gguf`` file into a float32
model on every load (about 20 s for the bundled SmolLM2, most of a one-query collect); the first
load keeps the result as an ordinary model directory (safetensors weights, config, tokenizer)
under ``$INFLUCODER_CACHE/decoders``, atomically, and later loads read that in under a second.

The folder is named by the GGUF file's fingerprint and the transformers version that
dequantised it, so another file or another dequantiser never reuses it. The weights are the
same bits, and stores keep recording the GGUF file's own name and fingerprint.
``INFLUCODER_DECODER_CACHE=0`` turns the copy off (it takes four times the GGUF file's disk).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from influcoder.io.atomic import atomic_write_dir
from influcoder.io.models import ModelRef, cache_dir, fingerprint

ENV = "INFLUCODER_DECODER_CACHE"
_OFF = {"0", "off", "false", "no"}


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in _OFF


def cached_folder(ref: ModelRef) -> Path:
    """Where the dequantised copy of GGUF decoder ``ref`` lives (whether or not it exists)."""
    import transformers

    key = f"{fingerprint(ref).removeprefix('sha256:')[:32]}-transformers-{transformers.__version__}"
    return cache_dir() / "decoders" / key


def usable(folder: Path) -> bool:
    """Whether ``folder`` holds a whole copy (:func:`keep` renames it into place only then)."""
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def dequantised(model) -> bool:
    """Whether every weight of a GGUF-loaded ``model`` is a plain float tensor: weights left in
    GGUF blocks (where transformers has a matmul kernel for them) are not a model to keep."""
    import torch

    return all(
        type(p) in (torch.Tensor, torch.nn.Parameter) and p.is_floating_point()
        for p in model.state_dict().values()
    )


def unmark(model) -> None:
    """Drop the GGUF quantiser's marks from a dequantised ``model``, so that it is the same
    plain float model whether it was read from the GGUF file or from the copy (PEFT treats a
    model marked quantised differently)."""
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)


def keep(folder: Path, model, tokenizer) -> Path | None:
    """Write the copy of an unmarked, dequantised ``model`` and its ``tokenizer`` into
    ``folder`` (:func:`cached_folder`); return it, or ``None`` (with one line on stderr) where
    the cache cannot be written."""

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_dir(folder, fill, keep_existing=True)
    except OSError as e:
        print(f"influcoder: could not keep a copy of the decoder in {folder}: {e}", file=sys.stderr)
        return None
    size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    print(
        f"influcoder: kept the dequantised decoder in {folder} ({size:,.1f} MiB); later loads "
        f"read it in under a second ({ENV}=0 turns this off)",
        file=sys.stderr,
    )
    return folder


def forget(folder: Path, reason: str) -> None:
    """Remove a copy that failed to load, saying why; the next load writes it again."""
    print(
        f"influcoder: the decoder copy in {folder} did not load ({reason}); reading the "
        f"GGUF file instead",
        file=sys.stderr,
    )
    shutil.rmtree(folder, ignore_errors=True)
