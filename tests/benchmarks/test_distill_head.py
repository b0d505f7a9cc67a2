"""distill_head.py's validation mode and variant parser, which choose distill's defaults: the
validation block must come from the training side only, and variants must parse to typed
settings (the fine-tuning itself is covered by the distill tests)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.benchmarks.test_bench_peers import _bench


def test_parse_variant_types_fields_and_refuses_unknown_ones():
    bench = _bench("distill_head")
    name, overrides = bench.parse_variant(
        "q64:batch_query=64,lr=2e-4,epochs=3,steps_per_epoch=5,target_temperature=0.1"
    )
    assert name == "q64"
    assert overrides == {
        "batch_query": 64,
        "lr": 2e-4,
        "epochs": 3,
        "steps_per_epoch": 5,
        "target_temperature": 0.1,
    }
    assert isinstance(overrides["batch_query"], int) and isinstance(overrides["lr"], float)
    with pytest.raises(SystemExit, match="'nope' is not a DistillArguments field"):
        bench.parse_variant("x:nope=1")


def test_within_keeps_to_the_training_side_of_the_split():
    bench = _bench("distill_head")
    labels = ["harmful"] * 12 + ["chat"] * 48
    data = {
        "labels": labels,
        "texts": {
            "pool": [f"p{i}" for i in range(60)],
            "train_queries": [f"q{i}" for i in range(30)],
            "test_queries": [f"t{i}" for i in range(9)],
        },
        "vectors": {
            "pool": np.arange(60.0)[:, None],
            "train_queries": np.arange(30.0)[:, None],
            "test_queries": np.arange(9.0)[:, None],
        },
    }
    data["samples"] = data["responses"] = data["texts"]
    held, train = bench.stratified_third(labels, 0)
    cut = bench.within_training_side(data, 0)
    # the pool is the split's training pool; the outer held-out pool and test queries are gone
    assert cut["texts"]["pool"] == [f"p{i}" for i in train]
    assert not {f"p{i}" for i in held} & set(cut["texts"]["pool"])
    assert not any(t.startswith("t") for k in cut["texts"] for t in cut["texts"][k])
    # the validation queries are a third of the training queries, disjoint from the rest
    val, fit = set(cut["texts"]["test_queries"]), set(cut["texts"]["train_queries"])
    assert len(val) == 10 and len(fit) == 20 and not val & fit
    assert val | fit == set(data["texts"]["train_queries"])
    # vectors and labels follow their rows
    assert [f"p{int(v)}" for v in cut["vectors"]["pool"][:, 0]] == cut["texts"]["pool"]
    assert [f"q{int(v)}" for v in cut["vectors"]["test_queries"][:, 0]] == cut["texts"][
        "test_queries"
    ]
    assert cut["labels"] == [labels[i] for i in train]
