"""learning_curve.py's --sampling: random keeps the nested prefixes the cached stores were
collected for; coverage draws each size's queries and pool, disjoint, spread over the
candidates; the union store's indices lead back to each size's samples."""

from __future__ import annotations

import numpy as np
import pytest

from tests.benchmarks.test_bench_peers import _bench


def _clusters() -> tuple[np.ndarray, np.ndarray]:
    """60 candidates: 50 around one point, 5 around each of two far ones."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    which = np.array([0] * 50 + [1] * 5 + [2] * 5)
    return (centres[which] + rng.normal(scale=0.5, size=(60, 2))).astype(np.float32), which


def test_random_indices_lead_to_the_stores_samples():
    common = _bench("common")
    candidates = [f"c{i}" for i in range(30)]
    max_q, max_p = 3, 6
    chosen = common.training_selection(30, [(2, 4), (3, 6)], "random", 0)
    queries, pool = candidates[:max_q], candidates[max_q : max_q + max_p]  # the two stores
    for (qi, pi), (sq, sp) in zip(
        chosen.values(), common.random_store_indices(chosen, max_q).values(), strict=True
    ):
        assert [queries[i] for i in sq] == [candidates[i] for i in qi]
        assert [pool[i] for i in sp] == [candidates[i] for i in pi]


def test_random_is_the_front_of_the_candidates_each_size_a_prefix():
    common = _bench("common")
    chosen = common.training_selection(30, [(2, 4), (3, 6)], "random", 0)
    assert [list(i) for i in chosen[(2, 4)]] == [[0, 1], [3, 4, 5, 6]]
    assert [list(i) for i in chosen[(3, 6)]] == [[0, 1, 2], [3, 4, 5, 6, 7, 8]]
    # --train-size: the pool starts after the stores' queries
    chosen = common.training_selection(30, [(2, 4)], "random", 0, train=(5, 10))
    assert list(chosen[(2, 4)][1]) == [5, 6, 7, 8]
    with pytest.raises(ValueError, match="need 40 candidate samples, there are 30"):
        common.training_selection(30, [(10, 30)], "random", 0)


def test_coverage_reaches_every_cluster_with_disjoint_queries_and_pool():
    common = _bench("common")
    x, which = _clusters()
    chosen = common.training_selection(60, [(3, 3), (3, 6)], "coverage", 0, x)
    for (q, p), (queries, pool) in chosen.items():
        assert len(set(queries)) == q and len(set(pool)) == p
        assert not set(queries) & set(pool)
        # three samples from 60 of which 50 are one cluster: coverage takes one of each,
        # for the queries and again for the pool from what the queries left
        if (q, p) == (3, 3):
            assert set(which[queries]) == set(which[pool]) == {0, 1, 2}
    again = common.training_selection(60, [(3, 3), (3, 6)], "coverage", 0, x)
    assert all(np.array_equal(a, b) for k in chosen for a, b in zip(chosen[k], again[k]))
    union, relabelled = common.selection_union(chosen)
    assert list(union) == sorted(set(np.concatenate([np.concatenate(v) for v in chosen.values()])))
    for size, (queries, pool) in chosen.items():
        assert np.array_equal(union[relabelled[size][0]], queries)
        assert np.array_equal(union[relabelled[size][1]], pool)
