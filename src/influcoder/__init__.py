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


def encode(*args, **kwargs):
    """Embed a data set into a store; see :func:`influcoder.encode.encode`."""
    from .encode import encode as _encode

    return _encode(*args, **kwargs)


def build_index(*args, **kwargs):
    """Build, resume or extend an index; see :func:`influcoder.index.build_index`."""
    from .index import build_index as _build_index

    return _build_index(*args, **kwargs)


def __getattr__(name):
    if name == "Attributor":  # imports torch and sentence-transformers: only when asked
        from .attribute import Attributor

        return Attributor
    raise AttributeError(f"module 'influcoder' has no attribute {name!r}")


def collect(*args, **kwargs):
    """Collect a gradient store; see :func:`influcoder.collect.collect`."""
    from .collect import collect as _collect

    return _collect(*args, **kwargs)


__all__ = ["Attributor", "CollectArguments", "InflucoderError", "InputError", "Sample", "Store",
           "StoreError", "build_index", "collect", "encode", "load_samples", "open_store"]
