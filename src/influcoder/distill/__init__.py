"""Distillation: train a sentence encoder whose cosines rank like gradient influence.

:func:`distill` runs the loop on a ground-truth matrix (``[n_pool, n_query]``) and the texts it
belongs to; :mod:`influcoder.distill.losses` holds the losses, usable on their own.
"""

from .arguments import DistillArguments
from .trainer import DistillResult, distill

__all__ = ["DistillArguments", "DistillResult", "distill"]
