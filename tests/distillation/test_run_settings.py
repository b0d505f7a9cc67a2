"""The split of runs and queries for learning from retraining runs: disjoint, seeded, and the
same held-out side whatever number of training runs is used (the curve's premise)."""

from __future__ import annotations

import numpy as np
import pytest

from influcoder.distillation.run_settings import RunsArguments, split_runs


def test_split_is_disjoint_seeded_and_nested_over_train_runs():
    full = split_runs(40, 20, RunsArguments(seed=3))
    assert len(full.heldout_runs) == 10 and len(full.heldout_queries) == 5
    assert set(full.train_runs).isdisjoint(full.heldout_runs)
    assert set(full.train_queries).isdisjoint(full.heldout_queries)
    assert sorted({*full.train_runs, *full.heldout_runs}) == list(range(40))
    again = split_runs(40, 20, RunsArguments(seed=3))
    assert again.to_dict() == full.to_dict()
    assert split_runs(40, 20, RunsArguments(seed=4)).to_dict() != full.to_dict()
    previous: set[int] = set()
    for k in (4, 8, 16, 30):
        part = split_runs(40, 20, RunsArguments(seed=3, train_runs=k))
        np.testing.assert_array_equal(part.heldout_runs, full.heldout_runs)
        np.testing.assert_array_equal(part.heldout_queries, full.heldout_queries)
        assert len(part.train_runs) == k and previous <= set(part.train_runs)
        previous = set(part.train_runs)
    assert previous == set(full.train_runs)


def test_no_held_out_side_and_refusals():
    split = split_runs(5, 3, RunsArguments(heldout_runs=0, heldout_queries=0))
    assert len(split.train_runs) == 5 and not len(split.heldout_runs)
    with pytest.raises(ValueError, match="too few runs"):
        split_runs(4, 3, RunsArguments(heldout_runs=0.25))  # one held-out run: no Spearman
    with pytest.raises(ValueError, match="train_runs=9 asked for"):
        split_runs(8, 4, RunsArguments(train_runs=9))
    with pytest.raises(ValueError, match="pooling must be one of"):
        RunsArguments(pooling="max")


def test_heldout_where_holds_out_exactly_the_matching_queries():
    from influcoder.distillation.run_settings import heldout_mask

    metas = [{"block": "report" if i % 3 == 0 else "validation"} for i in range(12)]
    args = RunsArguments(heldout_where="block=report", seed=1)
    mask = heldout_mask(metas, args.heldout_where)
    split = split_runs(20, 12, args, mask)
    assert list(split.heldout_queries) == [0, 3, 6, 9]
    assert list(split.train_queries) == [i for i in range(12) if i % 3]
    assert split_runs(20, 12, RunsArguments(seed=1)).heldout_runs.tolist() == (
        split.heldout_runs.tolist()
    )  # the runs' split does not move
    assert heldout_mask(metas, None) is None
    with pytest.raises(ValueError, match="0 of 12 queries match"):
        heldout_mask(metas, "block=test")
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        RunsArguments(heldout_where="block")
