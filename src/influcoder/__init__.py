"""influcoder: fast training-data attribution for language models.

Gradient influence (cosine of sketched, response-only LoRA gradients) is computed once on a
sample of the data and distilled into a small sentence encoder; attribution then runs the
encoder alone.
"""

from .arguments import CollectArguments
from .data import Sample, load_samples
from .errors import InflucoderError, InputError, StoreError
from .store import Store, open_store

__version__ = "0.1.0"


def collect(*args, **kwargs):
    """Collect a gradient store; see :func:`influcoder.collect.collect`."""
    from .collect import collect as _collect

    return _collect(*args, **kwargs)


__all__ = ["CollectArguments", "InflucoderError", "InputError", "Sample", "Store", "StoreError",
           "collect", "load_samples", "open_store"]
