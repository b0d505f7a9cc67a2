"""Baselines on tiny hand-made samples, BM25 against a hand computation, gradient re-sketches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from influcoder.errors import StoreError
from influcoder.evaluation.baselines import (
    BASELINES,
    bm25_scores,
    encoder_scores,
    random_scores,
    store_scores,
    tfidf_scores,
    tokenize,
)
from influcoder.groundtruth.influence import cosine_scores
from influcoder.io.samples import Sample

from ..conftest import write_store

POOL = [
    Sample(id="pasta", prompt="How long do I boil pasta?", response="Boil the pasta ten minutes."),
    Sample(
        id="python",
        prompt="Why does my Python loop crash?",
        response="The Python list index is out of range.",
    ),
    Sample(
        id="paris",
        prompt="What should I see in Paris?",
        response="Visit the Louvre and walk along the Seine.",
    ),
    Sample(
        id="guitar",
        prompt="How do I tune a guitar?",
        response="Tune each guitar string to the reference pitch.",
    ),
]
QUERIES = [
    Sample(
        id="q-python",
        prompt="My Python program crashes in a loop",
        response="Check the list index.",
    ),
    Sample(id="q-pasta", prompt="pasta boil time", response="About ten minutes for pasta."),
]
EXPECTED_TOP = ["python", "pasta"]


def _store(path, x, *, kind="gradients", setup=None, dtype="float32"):
    return write_store(path, x, kind=kind, setup=setup, dtype=dtype)


def _check_result(result, n_pool, n_query):
    scores, info = result
    assert scores.shape == (n_pool, n_query) and np.isfinite(scores).all()
    assert info["seconds"] >= 0 and info["prepare_seconds"] >= 0
    assert info["bytes_per_sample"] >= 0
    return scores, info


@pytest.mark.parametrize("method", [tfidf_scores, bm25_scores])
def test_text_baselines_rank_the_matching_sample_first(method):
    scores, info = _check_result(method(POOL, QUERIES), len(POOL), len(QUERIES))
    assert [POOL[i].id for i in scores.argmax(axis=0)] == EXPECTED_TOP
    assert info["bytes_per_sample"] > 0


def test_random_is_reproducible_by_seed():
    a, info = _check_result(random_scores(POOL, QUERIES, seed=3), len(POOL), len(QUERIES))
    b, _ = random_scores(POOL, QUERIES, seed=3)
    c, _ = random_scores(POOL, QUERIES, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert info["bytes_per_sample"] == 0 and info["seed"] == 3


def test_registry_and_empty_input():
    assert set(BASELINES) == {"random", "tfidf", "bm25"}
    with pytest.raises(ValueError, match="queries is empty"):
        tfidf_scores(POOL, [])


def test_tokenize_lowercases_words():
    assert tokenize("Cat! dog_2, ÉTÉ") == ["cat", "dog_2", "été"]


def test_bm25_matches_a_hand_computation():
    # Documents (encoder_text = prompt + blank line + response), as tokens:
    #   d0 = [cat, dog]            |d0| = 2
    #   d1 = [cat, cat, fish]      |d1| = 3
    #   d2 = [bird, fish, bird]    |d2| = 3      avgdl = 8 / 3, N = 3
    # Query [cat, bird, zebra]: zebra is in no document and adds nothing.
    # idf(cat) = ln(1 + (3 - 2 + 0.5) / (2 + 0.5)) = ln(1.6);  idf(bird) = ln(1 + 2.5 / 1.5)
    # length norms k1 * (1 - b + b * |d| / avgdl): d0: 1.5 * (0.25 + 0.75 * 0.75) = 1.21875,
    #                                              d1, d2: 1.5 * (0.25 + 0.75 * 1.125) = 1.640625
    pool = [
        Sample(id="d0", prompt="Cat!", response="dog"),
        Sample(id="d1", prompt="cat cat", response="fish"),
        Sample(id="d2", prompt="bird", response="fish bird"),
    ]
    query = [Sample(id="q", prompt="cat", response="bird zebra")]
    idf_cat, idf_bird = math.log(1.6), math.log(1 + 2.5 / 1.5)
    expected = [
        idf_cat * 1 * 2.5 / (1 + 1.21875),
        idf_cat * 2 * 2.5 / (2 + 1.640625),
        idf_bird * 2 * 2.5 / (2 + 1.640625),
    ]
    scores, info = bm25_scores(pool, query)
    np.testing.assert_allclose(scores[:, 0], expected, rtol=1e-12)
    assert (info["k1"], info["b"]) == (1.5, 0.75)


def test_bm25_counts_repeated_query_words():
    pool = [
        Sample(id="a", prompt="cat", response="dog"),
        Sample(id="b", prompt="fish", response="bird"),
    ]
    once, _ = bm25_scores(pool, [Sample(id="q", prompt="cat", response="x")])
    twice, _ = bm25_scores(pool, [Sample(id="q", prompt="cat cat", response="x")])
    np.testing.assert_allclose(twice, 2 * once)


@pytest.fixture()
def clustered(tmp_path):
    """Gradient stores with cluster structure, so cosines range widely."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 256))

    def vectors(n):
        return (centers[rng.integers(4, size=n)] + rng.normal(size=(n, 256))).astype(np.float32)

    return _store(tmp_path / "pool", vectors(60)), _store(tmp_path / "q", vectors(8))


def test_store_scores_at_stored_dimension_are_the_cosines(clustered):
    pool, queries = clustered
    scores, info = _check_result(store_scores(pool, queries), pool.n, queries.n)
    np.testing.assert_allclose(scores, cosine_scores(pool, queries), rtol=1e-5, atol=1e-6)
    assert info["bytes_per_sample"] == 256 * 4 and info["dim"] == 256


def test_resketch_trades_fidelity_for_storage(clustered):
    pool, queries = clustered
    full, _ = store_scores(pool, queries)
    same_dim, info = store_scores(pool, queries, dim=256, seed=1)
    tiny, tiny_info = store_scores(pool, queries, dim=2, seed=1)
    # At the stored dimension only hash collisions perturb the cosines.
    assert np.abs(same_dim - full).mean() < 0.06
    assert np.corrcoef(same_dim.ravel(), full.ravel())[0, 1] > 0.95
    assert np.abs(tiny - full).mean() > 0.2
    assert (info["bytes_per_sample"], tiny_info["bytes_per_sample"]) == (1024, 8)
    np.testing.assert_array_equal(same_dim, store_scores(pool, queries, dim=256, seed=1)[0])


def test_resketch_dimension_is_checked(clustered):
    pool, queries = clustered
    for dim in (0, 257, 2.5):
        with pytest.raises(ValueError, match="between 1 and the stored dimension 256"):
            store_scores(pool, queries, dim=dim)


def test_store_scores_refuse_stores_of_another_setup(tmp_path):
    x = np.ones((3, 8), dtype=np.float32)
    a = _store(tmp_path / "a", x, kind="embeddings", setup={"encoder": "one"})
    b = _store(tmp_path / "b", x, kind="embeddings", setup={"encoder": "two"})
    with pytest.raises(StoreError, match="encoder: 'one' vs 'two'"):
        store_scores(a, b)


def test_encoder_scores_are_cosines_of_normalised_embeddings(tmp_path):
    from sentence_transformers import SentenceTransformer

    from tests.distillation.conftest import build_tiny_encoder_dir

    encoder = SentenceTransformer(build_tiny_encoder_dir(tmp_path), device="cpu")
    pool = [Sample(id=str(i), prompt=f"t{i}w0 t{i}w1", response="f1 f2") for i in range(4)]
    scores, info = _check_result(encoder_scores(encoder, pool, pool[:2]), 4, 2)
    np.testing.assert_allclose(np.diag(scores[:2]), 1.0, atol=1e-5)
    assert np.all(scores <= 1 + 1e-5)
    assert info["dim"] == 32 and info["bytes_per_sample"] == 32 * 4
