"""Chunked cosine scores and top-k against whole-matrix references."""

from __future__ import annotations

import numpy as np
import pytest

from influcoder.errors import StoreError
from influcoder.groundtruth.influence import (
    TopK,
    cosine_scores,
    load_scores,
    score_stores,
    top_k,
)

from ..conftest import write_store

SETUP = {"sketch": {"dim": 16, "seed": 0}}


def _store(path, x, setup=SETUP, shard_rows=7):
    return write_store(path, x, setup=setup, shard_rows=shard_rows)


@pytest.fixture()
def stores(tmp_path):
    rng = np.random.default_rng(0)
    pool, queries = rng.normal(size=(50, 16)), rng.normal(size=(6, 16))
    return (
        _store(tmp_path / "pool", pool),
        _store(tmp_path / "q", queries, shard_rows=4),
        pool,
        queries,
    )


def _reference_cosines(a, b):
    return np.array([[x @ y / np.linalg.norm(x) / np.linalg.norm(y) for y in b] for x in a])


def test_chunked_cosines_match_reference(stores):
    p, q, pool, queries = stores
    np.testing.assert_allclose(
        cosine_scores(p, q), _reference_cosines(pool, queries), rtol=1e-5, atol=1e-6
    )


def test_streaming_topk_matches_full_sort(stores, tmp_path):
    p, q, pool, queries = stores
    rows, scores = score_stores(p, q, tmp_path / "scores", k=5)
    ref = _reference_cosines(pool, queries)
    ref_rows, ref_scores = top_k(ref, 5)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5)
    assert rows.shape == (5, 6)
    full, meta = load_scores(tmp_path / "scores")
    np.testing.assert_allclose(full, ref, rtol=1e-5, atol=1e-6)
    assert meta["pool_ids"] == p.ids and meta["query_ids"] == q.ids


def test_topk_ties_and_k_beyond_chunk():
    t = TopK(3, 1)
    t.update(0, np.array([[1.0], [0.5]]))
    t.update(2, np.array([[1.0], [2.0], [0.5]]))
    rows, scores = t.result()
    assert rows[:, 0].tolist() == [3, 0, 2] and scores[:, 0].tolist() == [2.0, 1.0, 1.0]


def test_mismatched_stores_are_refused(tmp_path):
    a = _store(tmp_path / "a", np.ones((3, 16)))
    b = _store(tmp_path / "b", np.ones((3, 16)), setup={"sketch": {"dim": 16, "seed": 1}})
    with pytest.raises(StoreError, match="sketch.seed: 0 vs 1"):
        cosine_scores(a, b)
