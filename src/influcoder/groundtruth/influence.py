"""Influence scores: cosine of stored vectors, in chunks, and top-k.

The influence of pool sample *i* on query *j* is the cosine of their vectors (sketched
gradients or embeddings). Stored vectors are unit length up to float16 rounding, so rows are
renormalised in float32 before the dot product; except the embeddings of an encoder that
compares by dot product, whose store says ``"normalized": false`` and whose rows are used as
stored (:func:`compared_rows`). With ``similarity="inner"`` gradient stores are compared by
the inner product of the gradients before normalisation (rows scaled by their stored norms).

Memory: the queries are held whole (``n_query x dim``); the pool streams through one shard at
a time. Only the score matrix itself (``n_pool x n_query`` float32, on disk through a memmap
when written) and the running top-k grow with the data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from influcoder.io.atomic import atomic_write_dir
from influcoder.io.stores import Store, check_same_setup
from influcoder.similarity import check_similarity, scored_rows

SCORES_FILE = "scores.npy"
SCORES_META = "scores.json"


def iter_score_chunks(
    pool: Store, queries: Store, similarity: str = "cosine"
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_pool_row, scores)`` with ``scores`` of shape ``rows x n_query``."""
    check_same_setup(pool, queries)
    check_similarity(similarity)
    q = scored_rows(queries, 0, queries.vectors(), similarity)
    norms = pool.norms() if similarity == "inner" else None
    for start, chunk in pool.iter_chunks():
        yield start, scored_rows(pool, start, chunk, similarity, norms) @ q.T


def cosine_scores(pool: Store, queries: Store, similarity: str = "cosine") -> np.ndarray:
    """The whole ``n_pool x n_query`` cosine matrix (dot products for a ``"normalized":
    false`` store, :func:`compared_rows`; inner products of the unnormalised gradients with
    ``similarity="inner"``), in memory."""
    out = np.empty((pool.n, queries.n), dtype=np.float32)
    for start, s in iter_score_chunks(pool, queries, similarity):
        out[start : start + len(s)] = s
    return out


class TopK:
    """Running top-k per column over row chunks (largest first)."""

    def __init__(self, k: int, n_cols: int):
        self.k = k
        self.scores = np.full((0, n_cols), -np.inf, dtype=np.float32)
        self.rows = np.zeros((0, n_cols), dtype=np.int64)

    def update(self, start: int, chunk: np.ndarray) -> None:
        idx = np.broadcast_to(np.arange(start, start + len(chunk))[:, None], chunk.shape)
        scores = np.concatenate([self.scores, chunk.astype(np.float32)])
        rows = np.concatenate([self.rows, idx])
        if len(scores) > self.k:
            part = np.argpartition(-scores, self.k - 1, axis=0)[: self.k]
            scores = np.take_along_axis(scores, part, axis=0)
            rows = np.take_along_axis(rows, part, axis=0)
        self.scores, self.rows = scores, rows

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, scores)``, each ``k x n_cols``, sorted by score descending (ties: lower
        row first)."""
        order = np.lexsort((self.rows, -self.scores), axis=0)
        return (
            np.take_along_axis(self.rows, order, axis=0),
            np.take_along_axis(self.scores, order, axis=0),
        )


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k of a whole score matrix per column: a full sort."""
    order = np.lexsort(
        (np.broadcast_to(np.arange(len(scores))[:, None], scores.shape), -scores), axis=0
    )[:k]
    return order, np.take_along_axis(scores, order, axis=0)


def score_stores(
    pool: Store,
    queries: Store,
    out: str | os.PathLike | None = None,
    *,
    k: int = 0,
    progress=None,
    similarity: str = "cosine",
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Stream the pool, optionally writing the score matrix to directory ``out``
    (``scores.npy``: ``n_pool x n_query`` float32 and ``scores.json``: the ids, in order) and
    keeping the top ``k`` pool rows per query. Returns the top-k ``(rows, scores)`` (or
    ``(None, None)`` when ``k == 0``). ``similarity``: ``cosine`` or ``inner``."""
    topk = TopK(min(k, pool.n), queries.n) if k else None
    meta = {
        "pool": str(pool.path),
        "queries": str(queries.path),
        "pool_ids": pool.ids,
        "query_ids": queries.ids,
        "rows": "pool",
        "columns": "queries",
        "measure": check_similarity(similarity),
    }

    def run(target: Path | None) -> None:
        mm = None
        if target is not None:
            mm = np.lib.format.open_memmap(
                target / SCORES_FILE, mode="w+", dtype=np.float32, shape=(pool.n, queries.n)
            )
        for start, s in iter_score_chunks(pool, queries, similarity):
            if mm is not None:
                mm[start : start + len(s)] = s
            if topk is not None:
                topk.update(start, s)
            if progress is not None:
                progress(len(s))
        if mm is not None:
            mm.flush()
            del mm
            (target / SCORES_META).write_text(json.dumps(meta) + "\n", encoding="utf-8")

    if out is None:
        run(None)
    else:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_dir(out, run)
    return topk.result() if topk is not None else (None, None)


def load_scores(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a score directory written by :func:`score_stores` (memory-mapped)."""
    path = Path(path)
    meta = json.loads((path / SCORES_META).read_text(encoding="utf-8"))
    return np.load(path / SCORES_FILE, mmap_mode="r", allow_pickle=False), meta
