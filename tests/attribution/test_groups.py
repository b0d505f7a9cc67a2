"""Group attribution: the vectorised statistics against a plain-Python reference, over every
pool score of an index; the missing group; the CLI's table and file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from influcoder.attribution.groups import group_attribution, group_stats, pool_groups
from influcoder.attribution.settings import MISSING_GROUP
from influcoder.cli import cli
from influcoder.errors import InputError
from influcoder.io.samples import Sample
from tests.references import reference_group_stats

# The same indexed pool as the selection tests (module-scoped there and here).
from .test_select import attributor, big_pool_rows, pool_dir  # noqa: F401

QUERIES = ["The capital of France is Paris.", "Boil the egg in water."]


def check_against_reference(stats, j, scores, labels, temperature, atol=1e-9, rtol=0.0):
    expected = reference_group_stats(scores, labels, temperature=temperature)
    names = list(dict.fromkeys(labels))
    for name in ("mean", "sum", "max", "softmax"):
        got = stats[name][j] if stats[name].ndim == 2 else stats[name]
        np.testing.assert_allclose(
            got, [expected[g][name] for g in names], rtol=rtol, atol=atol, err_msg=name
        )


@pytest.mark.parametrize("temperature", [0.01, 0.1, 1.0, 10.0])
def test_group_stats_equal_the_reference(temperature):
    rng = np.random.default_rng(int(temperature * 100))
    n, n_groups = 500, 7
    codes = rng.integers(0, n_groups, size=n)
    codes[:n_groups] = np.arange(n_groups)  # every group present
    codes[n_groups] = 3
    scores = rng.uniform(-1, 1, size=(3, n))
    scores[:, codes == 5] = 0.9  # a group of equal scores: softmax is their mean
    stats = group_stats(scores, codes, n_groups, temperature=temperature)
    labels = [f"g{c}" for c in codes]
    order = list(dict.fromkeys(labels))
    perm = [int(g[1:]) for g in order]
    for j in range(3):
        check_against_reference(
            {k: v[:, perm] for k, v in stats.items()}, j, scores[j], labels, temperature
        )
    np.testing.assert_allclose(stats["softmax"][:, 5], 0.9)
    one = group_stats(scores[0], codes, n_groups, temperature=temperature)
    np.testing.assert_allclose(one["softmax"], stats["softmax"][0])


def test_softmax_uses_the_magnitude_like_airrep():
    """AirRep's weights are softmax(|s|): a strongly negative score weighs as much as a
    strongly positive one (and pulls the group's score down)."""
    codes = np.zeros(3, dtype=np.int64)
    got = group_stats(np.array([-0.9, 0.1, 0.1]), codes, 1, temperature=1.0)["softmax"][0]
    w = np.exp([0.9, 0.1, 0.1])
    assert got == pytest.approx((w * [-0.9, 0.1, 0.1]).sum() / w.sum())
    assert got < np.mean([-0.9, 0.1, 0.1])


def test_group_attribution_over_every_pool_score(attributor):  # noqa: F811
    index = attributor.index
    _, q = attributor.encode(QUERIES)
    result = group_attribution(index, q, "source", temperature=0.1)
    labels = [s.meta.get("source", MISSING_GROUP) for seg in index.segments for s in seg.samples]
    assert result.groups.names == list(dict.fromkeys(labels))
    assert result.groups.n_missing == labels.count(MISSING_GROUP) > 0
    scores = index.vectors().astype(np.float64) @ q.T.astype(np.float64)
    for j in range(len(QUERIES)):
        # the index scores in float32, the reference in float64: a group's sum of ~50 scores
        # carries float32 rounding relative to its size (1.2e-6 off at 54.7 on one CPU)
        check_against_reference(result.stats, j, scores[:, j], labels, 0.1, atol=1e-6, rtol=1e-6)
        table = result.table(j)
        assert [r["softmax"] for r in table] == sorted((r["softmax"] for r in table), reverse=True)
        assert sum(r["n"] for r in table) == index.n
        assert {r["group"] for r in table} == set(labels)


def test_pool_groups_missing_and_unknown_fields():
    samples = [
        Sample("a", "p", "r", meta={"source": "web"}),
        Sample("b", "p", "r", meta={"source": ""}),
        Sample("c", "p", "r", meta={"source": None, "file": "x"}),
        Sample("d", "p", "r", meta={"source": ["x", 1]}),
        Sample("e", "p", "r", meta={"source": 3}),
    ]
    groups = pool_groups(samples, "source")
    assert groups.names == ["web", MISSING_GROUP, '["x", 1]', "3"]
    assert groups.codes.tolist() == [0, 1, 1, 2, 3] and groups.n_missing == 2
    with pytest.raises(
        InputError,
        match=r"no pool sample has the metadata field 'topic' "
        r"\(the pool's fields: file, source\)",
    ):
        pool_groups(samples, "topic")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        group_stats(np.zeros(5), groups.codes, 4, temperature=0)


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_attribute_group_by(pool_dir, attributor, tmp_path):  # noqa: F811
    args = [
        "attribute",
        str(pool_dir / "idx"),
        "--text",
        QUERIES[0],
        "--text",
        QUERIES[1],
        "--group-by",
        "source",
        "--backend",
        "torch",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    n_missing = sum(1 for r in big_pool_rows() if "source" not in r)
    assert f"{n_missing} pool samples lack 'source': their group is (missing)" in result.output
    assert result.output.count("\nquery ") == 2 and "softmax(|s|/0.1)" in result.output
    _, q = attributor.encode(QUERIES)
    best = group_attribution(attributor.index, q, "source").table(0)[0]
    assert f"{best['n']:>6}  {best['mean']:+8.4f}" in result.output

    out = tmp_path / "groups.csv"
    result = CliRunner().invoke(cli, [*args, "--temperature", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 2 * 5 and set(table["group"]) == {"s0", "s1", "s2", "s3", MISSING_GROUP}
    first = group_attribution(attributor.index, q, "source", temperature=1.0).table(0)
    np.testing.assert_allclose(table["softmax"][:5], [r["softmax"] for r in first], atol=1e-6)
    assert (table["temperature"] == 1.0).all()


def test_cli_attribute_aggregate_group_by(pool_dir, attributor, tmp_path):  # noqa: F811
    out = tmp_path / "g.jsonl"
    result = CliRunner().invoke(
        cli,
        [
            "attribute",
            str(pool_dir / "idx"),
            "--text",
            QUERIES[0],
            "--text",
            QUERIES[1],
            "--aggregate",
            "mean",
            "--group-by",
            "source",
            "--out",
            str(out),
            "--backend",
            "torch",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ranking = attributor.aggregate(QUERIES, "mean")
    labels = [s.meta.get("source", MISSING_GROUP) for s in attributor.index.segments[0].samples]
    expected = reference_group_stats(ranking.scores, labels, temperature=0.1)
    for r in rows:
        assert r["query_id"] == "aggregate"
        assert r["n"] == expected[r["group"]]["n"]
        assert r["mean"] == pytest.approx(expected[r["group"]]["mean"], abs=1e-9)
        assert r["softmax"] == pytest.approx(expected[r["group"]]["softmax"], abs=1e-9)


def test_cli_group_by_errors_exit_2(pool_dir):  # noqa: F811
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "attribute",
            str(pool_dir / "idx"),
            "--text",
            "egg",
            "--group-by",
            "colour",
            "--backend",
            "torch",
        ],
    )
    assert (
        result.exit_code == 2
        and "no pool sample has the metadata field 'colour'" in result.output
        and "source" in result.output
    )
    result = runner.invoke(
        cli,
        [
            "attribute",
            str(pool_dir / "idx"),
            "--text",
            "egg",
            "--group-by",
            "source",
            "--temperature",
            "0",
        ],
    )
    assert result.exit_code == 2 and "--temperature must be > 0" in result.output
