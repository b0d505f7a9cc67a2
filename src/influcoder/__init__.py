"""influcoder: fast training-data attribution for language models.

Gradient influence (cosine of sketched, response-only LoRA gradients) is computed once on a
sample of the data and distilled into a small sentence encoder; attribution then runs the
encoder alone. One verb per stage::

    pool = influcoder.collect("train.jsonl", "runs/pool")
    queries = influcoder.collect("queries.jsonl", "runs/queries", like=pool)
    encoder = influcoder.distill(pool, queries, "runs/encoder")
    index = influcoder.index(encoder, "train.jsonl", "runs/index")
    [result] = influcoder.attribute(index, "the output you want explained", k=5)

The public names below are imported on first use (``import influcoder`` stays cheap: the CLI
answers ``--help`` without loading torch). No public name is also the name of a submodule, so
``import influcoder.x`` can never replace one of them.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it: one verb per stage (influcoder.api), the
#: settings of each stage, the objects the verbs return and take, the errors they raise
_PUBLIC = {
    # the verbs, in the order of the pipeline
    "collect": "influcoder.groundtruth.collect",
    "score": "influcoder.api",
    "distill": "influcoder.api",
    "encode": "influcoder.attribution.encode",
    "index": "influcoder.api",
    "attribute": "influcoder.api",
    "filter": "influcoder.api",
    "select": "influcoder.api",
    "evaluate": "influcoder.api",
    "validate": "influcoder.api",
    # their settings
    "CollectArguments": "influcoder.groundtruth.settings",
    "DistillArguments": "influcoder.distillation.settings",
    "EncodeArguments": "influcoder.attribution.settings",
    "ValidateArguments": "influcoder.validation.settings",
    # what they take and return
    "Attributor": "influcoder.attribution.attributor",
    "Sample": "influcoder.io.samples",
    "Scores": "influcoder.api",
    "Store": "influcoder.io.stores",
    "load_samples": "influcoder.io.samples",
    "open_store": "influcoder.io.stores",
    # errors
    "InflucoderError": "influcoder.errors",
    "InputError": "influcoder.errors",
    "StoreError": "influcoder.errors",
}
#: names of earlier releases, still importable but no longer listed: the verb replaces them
_FORMER = {"build_index": "influcoder.attribution.build"}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name) or _FORMER.get(name)
    if module is None:
        raise AttributeError(f"module 'influcoder' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
