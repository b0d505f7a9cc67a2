"""Settings of the attribution stage: encoders, embedding stores, indexes, aggregation.

Every default and choice of ``encode``, ``index``, ``attribute`` and ``filter`` is defined here
once; the CLI reads its choices and help from this module, which imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

from influcoder.encoders.settings import BACKENDS, DEFAULT_BATCH_SIZE, DEFAULT_ENCODER

#: How embeddings are stored: float16, float32, or int8 with per-row absmax scaling.
StorageDtype = Literal["float16", "float32", "int8"]
#: FAISS index kinds (``index --approx``); exact search (flat) is the default.
FaissKind = Literal["flat", "hnsw", "ivf"]

STORAGE_DTYPES: tuple[str, ...] = get_args(StorageDtype)
FAISS_KINDS: tuple[str, ...] = get_args(FaissKind)

#: ``select``: how a pool sample's cosines to the targets become one score (LESS: max).
DEFAULT_SELECT_AGGREGATE = "max"
#: ``select``: the first number of neighbours searched per target; doubled until the
#: selection is provably the exact one (see :mod:`influcoder.attribution.select`).
SELECT_FIRST_K = 64

#: ``attribute --group-by``: the statistics of a group's scores, and the group of the samples
#: that lack the field.
GROUP_STATS: tuple[str, ...] = ("mean", "sum", "max", "softmax")
#: The group aggregate of an encoder's learned pooler (``distill-runs --pooling attention``):
#: available only when the encoder directory carries one (:mod:`influcoder.encoders.pooler`).
LEARNED_AGGREGATE = "learned"
#: Every group aggregate a command may rank or judge groups by.
GroupAggregate = Literal["mean", "sum", "max", "softmax", "learned"]
GROUP_AGGREGATES: tuple[str, ...] = get_args(GroupAggregate)
MISSING_GROUP = "(missing)"
#: The statistic groups are ranked by (``attribute --group-by`` lists them by it, ``evaluate
#: --group-by`` judges methods on it unless ``--group-aggregate`` says otherwise).
DEFAULT_GROUP_AGGREGATE = "softmax"
#: ``attribute --group-by``: the temperature of the softmax-weighted group score (see
#: :mod:`influcoder.attribution.groups`; 1 is AirRep's released formula).
DEFAULT_GROUP_TEMPERATURE = 0.1

#: Rows per shard of an embedding store: the unit of resumption and of engine work.
DEFAULT_EMBEDDING_SHARD_ROWS = 1024

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
DEFAULT_EF_SEARCH = 128
#: IVF: training points per list (k-means on at most this many times nlist rows).
IVF_TRAIN_PER_LIST = 64
#: IVF: faiss wants at least this many training points per list.
IVF_MIN_PER_LIST = 39
#: IVF: share of the lists searched by default (recall@10 about 0.97 on the benchmark's
#: synthetic embeddings).
IVF_PROBE_FRACTION = 1 / 4
#: Seed of the IVF k-means.
SEED = 0


@dataclass
class EncodeArguments:
    """How embeddings are made (``influcoder encode`` and ``influcoder index``)."""

    encoder: str = field(
        default=DEFAULT_ENCODER,
        metadata={
            "help": "encoder: a sentence-transformers directory or 'all-minilm-l6-v2' (bundled)"
        },
    )
    backend: str = field(
        default="auto",
        metadata={
            "help": "encoder inference: torch (float32 reference), bf16, onnx, int8, or auto "
            "(bf16 where the CPU has bf16 units, else torch)"
        },
    )
    max_seq_length: int | None = field(
        default=None,
        metadata={"help": "tokens per text; longer texts are cut (default: the encoder's own)"},
    )
    batch_size: int = field(default=DEFAULT_BATCH_SIZE, metadata={"help": "texts per batch"})
    dtype: str = field(
        default="float16",
        metadata={"help": "stored dtype: float16, float32 or int8 (per-row absmax scaling)"},
    )
    shard_rows: int = field(
        default=DEFAULT_EMBEDDING_SHARD_ROWS,
        metadata={"help": "rows per store shard (the unit of resumption and of engine work)"},
    )

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.dtype not in STORAGE_DTYPES:
            raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {self.dtype!r}")
        if self.batch_size < 1 or self.shard_rows < 1:
            raise ValueError("batch_size and shard_rows must be >= 1")
        if self.max_seq_length is not None and self.max_seq_length < 2:
            raise ValueError("max_seq_length must be >= 2")

    def to_dict(self) -> dict:
        return asdict(self)
