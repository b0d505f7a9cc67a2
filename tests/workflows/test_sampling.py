"""Which training samples get gradients: coverage sampling (k-means on the untrained
encoder's embeddings, the sample nearest each centroid) is seeded, deterministic and spread
over the clusters where a random sample follows the density."""

from __future__ import annotations

import json

import numpy as np
import pytest

from influcoder.workflows.sampling import coverage_indices, random_indices

from ..conftest import write_jsonl
from ..tiny_encoders import POOL, pool_rows


def _clusters(sizes, d=12, seed=0):
    """Points around well-separated centres (30 along each axis), one cluster per size;
    returns (x, cluster)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(len(sizes), d) * 30
    label = np.repeat(np.arange(len(sizes)), sizes)
    return centres[label] + rng.standard_normal((len(label), d)), label


def test_coverage_takes_one_sample_from_every_cluster_even_the_rare_ones():
    # one cluster of 900 points and nine of 10: a random 10 mostly come from the big one
    x, label = _clusters([900] + [10] * 9)
    picked = coverage_indices(x, 10, seed=0)
    assert len(set(picked)) == 10 and np.array_equal(picked, np.sort(picked))
    assert sorted(label[picked]) == list(range(10))
    assert len(set(label[random_indices(len(x), 10, seed=0)])) < 10
    # each pick is the point nearest its cluster's mean, near the centre
    for i in picked:
        members = x[label == label[i]]
        assert np.linalg.norm(x[i] - members.mean(0)) < np.median(
            np.linalg.norm(members - members.mean(0), axis=1)
        )


def test_coverage_is_deterministic_for_a_seed_and_takes_distinct_samples():
    x, _ = _clusters([30] * 5, seed=1)
    one, two = coverage_indices(x, 40, seed=3), coverage_indices(x, 40, seed=3)
    assert np.array_equal(one, two) and len(set(one)) == 40
    assert np.array_equal(coverage_indices(x, len(x), seed=0), np.arange(len(x)))
    with pytest.raises(ValueError, match="k must be in"):
        coverage_indices(x, len(x) + 1, seed=0)


def test_fit_plans_a_coverage_sample_and_keeps_it_on_resume(tmp_path, tiny_encoder):
    from influcoder.workflows.fit_plan import FIT_FILE, FitArguments, plan_fit

    train = write_jsonl(tmp_path / "train.jsonl", pool_rows())
    queries = write_jsonl(
        tmp_path / "q.jsonl",
        [{"id": f"q{i}", "prompt": p, "response": r} for i, (p, r) in enumerate(POOL[:6])],
    )
    args = dict(ground_truth=8, seed=2, encoder=str(tiny_encoder), sampling="coverage")
    one = plan_fit(train, queries, tmp_path / "fit", FitArguments(**args))
    two = plan_fit(train, queries, tmp_path / "fit", FitArguments(**args))
    ids = [s.id for s in one.pool_samples]
    assert ids == [s.id for s in two.pool_samples] and len(set(ids)) == 8
    assert one.manifest["pool_ids"] == ids and one.manifest["settings"]["sampling"] == "coverage"
    assert "(coverage, seed 2)" in "\n".join(one.lines())
    # a fit in the folder keeps the sample it recorded; another sampling is refused
    (tmp_path / "fit").mkdir()
    recorded = {**one.manifest, "pool_ids": ids[::-1]}
    (tmp_path / "fit" / FIT_FILE).write_text(json.dumps(recorded))
    again = plan_fit(train, queries, tmp_path / "fit", FitArguments(**args))
    assert [s.id for s in again.pool_samples] == ids[::-1]
    from influcoder.errors import StoreError

    with pytest.raises(StoreError, match="--sampling 'coverage', not 'random'"):
        plan_fit(train, queries, tmp_path / "fit", FitArguments(**{**args, "sampling": "random"}))
    with pytest.raises(ValueError, match="sampling must be one of"):
        FitArguments(sampling="kmeans")
