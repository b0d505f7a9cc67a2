"""File names and formats of everything influcoder writes.

A store is a directory::

    manifest.json        setup and provenance (see store.py); written last on creation
    samples.jsonl        the samples the vectors belong to, one JSON object per line, in row order
    vectors/NNNNN.safetensors   one shard of rows: tensor "vectors" (rows x dim) and, in
                         gradient stores, "norms" (rows: each row's L2 norm before it was
                         normalised; stores made before it existed lack it)
    adapter/             the LoRA adapter the gradients were taken with (gradient stores only),
                         with preconditioner.safetensors when the gradients are preconditioned
"""

from __future__ import annotations

MANIFEST_NAME = "manifest.json"


SAMPLES_NAME = "samples.jsonl"


SHARDS_DIR = "vectors"


SHARD_TENSOR = "vectors"


NORMS_TENSOR = "norms"


ADAPTER_DIR = "adapter"


PRECONDITIONER_NAME = "preconditioner.safetensors"


STORE_FORMAT_VERSION = 1


DEFAULT_SHARD_ROWS = 64
