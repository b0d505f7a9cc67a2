"""File names and formats of everything influcoder writes.

A store is a directory::

    manifest.json        setup and provenance (see store.py); written last on creation
    samples.jsonl        the samples the vectors belong to, one JSON object per line, in row order
    vectors/NNNNN.safetensors   one shard of rows: tensor "vectors" (rows x dim)
    adapter/             the LoRA adapter the gradients were taken with (gradient stores only)
"""

MANIFEST_NAME = "manifest.json"
SAMPLES_NAME = "samples.jsonl"
SHARDS_DIR = "vectors"
SHARD_TENSOR = "vectors"
ADAPTER_DIR = "adapter"
STORE_FORMAT_VERSION = 1

DEFAULT_SHARD_ROWS = 64
DEFAULT_SKETCH_DIM = 8192
DEFAULT_SKETCH_SEED = 0
DEFAULT_LORA_RANK = 8
DEFAULT_MAX_LENGTH = 512
DEFAULT_DECODER = "smollm2-135m"
DEFAULT_ENCODER = "all-minilm-l6-v2"

# LoRA targets: every linear projection of the attention and MLP blocks of Llama-like models.
# Embeddings and the LM head are never targets.
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
