"""Distillation: train a sentence encoder whose cosines rank like gradient influence.

:func:`distill` runs the loop on a ground-truth matrix (``[n_pool, n_query]``) and the texts it
belongs to; :mod:`influcoder.distillation.losses` holds the losses, usable on their own;
:mod:`influcoder.distillation.settings` the settings (importing it loads no torch);
:func:`fit_head` and :func:`append_head` (:mod:`influcoder.distillation.linear`) the closed-form
linear head into the gradients' principal space, appended as sentence-transformers modules.
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "DistillArguments": "influcoder.distillation.settings",
    "DistillResult": "influcoder.distillation.trainer",
    "LinearHead": "influcoder.distillation.linear",
    "append_head": "influcoder.distillation.export",
    "distill": "influcoder.distillation.trainer",
    "fit_head": "influcoder.distillation.head_fit",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'influcoder.distillation' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
