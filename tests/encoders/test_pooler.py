"""The learned pooler: the group path (per-sample weights, then a weighted sum of scores)
against training's :class:`AttentionPooling` on small tensors, and reading it back from an
encoder directory (float32 exact through JSON; malformed cards refused, naming the field)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from influcoder.attribution.groups import group_stats
from influcoder.distillation.pooling import AttentionPooling
from influcoder.encoders.pooler import RUNS_CARD, read_pooler, require_pooler
from influcoder.errors import InputError


def write_card(folder, pooling):
    folder.mkdir(exist_ok=True)
    (folder / RUNS_CARD).write_text(json.dumps({"pooling": pooling}))
    return folder


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_learned_group_scores_equal_attention_pooling(tmp_path, temperature):
    rng = np.random.default_rng(int(temperature * 10))
    n, d, n_groups, n_query = 30, 6, 5, 4
    pool = rng.normal(size=(n, d))
    queries = rng.normal(size=(n_query, d))
    codes = rng.permutation(np.arange(n) % n_groups)  # every group has members
    reference = AttentionPooling(d, temperature).double()
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(rng.normal(size=d) * 2))
    members = np.eye(n_groups)[codes].T  # [groups, n]: the groups as the subsets
    expected = reference(
        torch.from_numpy(members), torch.from_numpy(pool), torch.from_numpy(queries)
    ).T.detach()  # [queries, groups]
    pooler = read_pooler(write_card(tmp_path / "enc", reference.config()))
    weights = pooler.member_weights(pooler.logits(pool), codes, n_groups)
    got = group_stats(queries @ pool.T, codes, n_groups, learned=weights)["learned"]
    # the stored weight is float32: the reference's float64 weight rounded once
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooler.pool(members, pool) @ queries.T, got.T, rtol=1e-12)
    # w = 0 is the sum aggregate
    flat = read_pooler(write_card(tmp_path / "flat", AttentionPooling(d).config()))
    zero = group_stats(
        queries @ pool.T,
        codes,
        n_groups,
        learned=flat.member_weights(flat.logits(pool), codes, n_groups),
    )
    np.testing.assert_allclose(zero["learned"], zero["sum"], rtol=1e-12)


def test_the_weight_round_trips_and_bad_cards_are_refused(tmp_path):
    pooling = AttentionPooling(4, 0.5)
    with torch.no_grad():
        pooling.weight.copy_(torch.tensor([0.1, -1 / 3, 2.5e-7, 7.0]))
    pooler = read_pooler(write_card(tmp_path / "ok", pooling.config()))
    assert pooler.weight.dtype == np.float32 and pooler.temperature == 0.5
    np.testing.assert_array_equal(pooler.weight, pooling.weight.detach().numpy())
    assert read_pooler(write_card(tmp_path / "sum", {"kind": "sum"})) is None
    assert read_pooler(tmp_path / "none") is None
    with pytest.raises(InputError, match="--group-aggregate learned: the encoder .*sum.* carries"):
        require_pooler(tmp_path / "sum", "--group-aggregate learned")
    bad = write_card(tmp_path / "bad", {"kind": "attention", "weight": [1.0, "x"]})
    with pytest.raises(InputError, match=r"influcoder_runs.json: field 'pooling.weight'"):
        read_pooler(bad)
    bad = write_card(tmp_path / "t", {"kind": "attention", "weight": [1.0], "temperature": 0})
    with pytest.raises(InputError, match="field 'pooling.temperature'"):
        read_pooler(bad)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / RUNS_CARD).write_text("{oops")
    with pytest.raises(InputError, match="not a JSON file"):
        read_pooler(tmp_path / "junk")
    with pytest.raises(InputError, match="4 dimensions, the embeddings 3"):
        pooler.logits(np.zeros((2, 3)))
