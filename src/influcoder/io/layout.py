"""File names and formats of everything influcoder writes.

A store is a directory::

    manifest.json        setup and provenance (see store.py); written last on creation
    samples.jsonl        the samples the vectors belong to, one JSON object per line, in row order
    vectors/NNNNN.safetensors   one shard of rows: tensor "vectors" (rows x dim)
    adapter/             the LoRA adapter the gradients were taken with (gradient stores only)
"""

from __future__ import annotations

MANIFEST_NAME = "manifest.json"


SAMPLES_NAME = "samples.jsonl"


SHARDS_DIR = "vectors"


SHARD_TENSOR = "vectors"


ADAPTER_DIR = "adapter"


STORE_FORMAT_VERSION = 1


DEFAULT_SHARD_ROWS = 64
