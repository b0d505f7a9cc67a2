"""influcoder: fast training-data attribution for language models.

Gradient influence (cosine of sketched, response-only LoRA gradients) is computed once on a
sample of the data and distilled into a small sentence encoder; attribution then runs the
encoder alone.

The public names below are imported on first use (``import influcoder`` stays cheap: the CLI
answers ``--help`` without loading torch). No public name is also the name of a submodule, so
``import influcoder.x`` can never replace one of them.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "Attributor": "influcoder.attribution.attributor",
    "CollectArguments": "influcoder.groundtruth.settings",
    "EncodeArguments": "influcoder.attribution.settings",
    "InflucoderError": "influcoder.errors",
    "InputError": "influcoder.errors",
    "Sample": "influcoder.io.samples",
    "Store": "influcoder.io.stores",
    "StoreError": "influcoder.errors",
    "build_index": "influcoder.attribution.build",
    "collect": "influcoder.groundtruth.collect",
    "encode": "influcoder.attribution.encode",
    "load_samples": "influcoder.io.samples",
    "open_store": "influcoder.io.stores",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'influcoder' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
