"""Targeted selection: the FAISS path against the brute force over the whole score matrix,
the subset in the pool's own format, the report, and the CLI's answers to bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from influcoder.attribution.attributor import Attributor
from influcoder.attribution.build import build_index
from influcoder.attribution.select import select_pool, select_rows, selection_count
from influcoder.cli import cli
from influcoder.errors import InputError
from tests.references import reference_select

from ..tiny_encoders import WORDS, pool_rows

TARGETS = ["The capital of France is Paris.", "Boil the egg in water.", "Tell me a joke."]


def big_pool_rows(n: int = 300) -> list[dict]:
    """The fixed pool plus seeded random sentences from the encoder's words, so that the
    search has to widen (a ``source`` field, absent from every seventh row)."""
    rng = np.random.default_rng(0)
    rows = pool_rows()
    for i in range(len(rows), n):
        words = rng.choice(WORDS, size=int(rng.integers(3, 12)))
        row = {
            "id": f"p{i}",
            "prompt": " ".join(words[:2]) + "?",
            "response": " ".join(words[2:]) + ".",
        }
        if i % 7:
            row["source"] = f"s{i % 4}"
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory, tiny_encoder):  # noqa: F811
    path = tmp_path_factory.mktemp("select")
    pool = path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in big_pool_rows()))
    build_index(
        pool, path / "idx", str(tiny_encoder), backend="torch", shard_rows=64, progress=False
    )
    return path


@pytest.fixture(scope="module")
def attributor(pool_dir):
    return Attributor.load(pool_dir / "idx", backend="torch")


def unit(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("how", ["max", "mean", "sum", "spread"])
@pytest.mark.parametrize("n_targets", [1, 3, 8])
@pytest.mark.parametrize("count", [1, 7, 60, 300])
@pytest.mark.parametrize("first_k", [1, 64])
def test_select_rows_equals_brute_force(attributor, how, n_targets, count, first_k):
    index = attributor.index
    rng = np.random.default_rng(count * 31 + n_targets)
    # random directions, and half of them near real pool samples (the realistic case: a
    # target resembles some training data much more than the rest)
    targets = unit(rng, n_targets, index.dim)
    near = index.rows(rng.choice(index.n, size=n_targets // 2, replace=False))
    targets[: len(near)] = near + 0.3 * targets[: len(near)]
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    spread = how == "spread"
    sel = select_rows(
        index,
        targets,
        count,
        how="max" if spread else how,
        spread=spread,
        first_k=first_k,
        scan=False,
    )
    rows, scores, whose = reference_select(
        index.vectors(), targets, count, how="max" if spread else how, spread=spread
    )
    assert sel.rows.tolist() == rows
    np.testing.assert_allclose(sel.scores, scores, atol=1e-5)
    assert sel.target.tolist() == whose
    assert len(set(sel.rows.tolist())) == count
    if spread:
        share = np.bincount(sel.target, minlength=n_targets)
        assert share.max() - share.min() <= 1 and share.sum() == count
    if first_k == 1 and count > 1 and how != "mean" and how != "sum":
        assert sel.k > 1  # the search widened


@pytest.mark.parametrize("n_targets", [1, 40])
@pytest.mark.parametrize("count", [1, 60, 300])
def test_max_by_scanning_equals_brute_force(attributor, n_targets, count):
    index = attributor.index
    targets = unit(np.random.default_rng(count + n_targets), n_targets, index.dim)
    sel = select_rows(index, targets, count, scan=True)
    rows, scores, whose = reference_select(index.vectors(), targets, count)
    assert sel.k == 0 and sel.rows.tolist() == rows and sel.target.tolist() == whose
    np.testing.assert_allclose(sel.scores, scores, atol=1e-5)
    assert select_rows(index, targets, count).k == 0  # the default on a flat index


def test_index_rows_equal_the_vectors(attributor):
    index = attributor.index
    rows = np.array([299, 0, 64, 63, 5, 5])
    np.testing.assert_array_equal(index.rows(rows), index.vectors()[rows])
    with pytest.raises(ValueError, match="between 0 and 299"):
        index.rows([300])


def test_selection_count():
    assert selection_count(300, fraction=0.1) == 30
    assert selection_count(300, fraction=0.001) == 1
    assert selection_count(300, fraction=1.0) == 300
    assert selection_count(300, count=12) == 12
    for bad in ({"fraction": 0.0}, {"fraction": 1.5}, {"fraction": -0.1}):
        with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
            selection_count(300, **bad)
    for bad in ({}, {"fraction": 0.1, "count": 3}):
        with pytest.raises(ValueError, match="exactly one"):
            selection_count(300, **bad)
    with pytest.raises(ValueError, match="count must be between 1 and 300"):
        selection_count(300, count=301)


@pytest.mark.parametrize("spread", [False, True])
def test_select_pool_writes_the_chosen_rows_as_they_were(attributor, pool_dir, tmp_path, spread):
    out = tmp_path / "subset.jsonl"
    result = select_pool(attributor, TARGETS, out, count=9, spread=spread)
    _, q = attributor.encode(TARGETS)
    rows, scores, whose = reference_select(attributor.index.vectors(), q, 9, spread=spread)
    originals = [json.loads(line) for line in (pool_dir / "pool.jsonl").read_text().splitlines()]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == [originals[r] for r in sorted(rows)]  # pool order, rows as they were
    report = [
        json.loads(line) for line in (tmp_path / "subset.selected.jsonl").read_text().splitlines()
    ]
    assert [r["id"] for r in report] == [f"p{r}" for r in rows]
    assert [r["rank"] for r in report] == list(range(1, 10))
    np.testing.assert_allclose([r["score"] for r in report], scores, atol=1e-5)
    assert [r["target"]["id"] for r in report] == [result.targets[j].id for j in whose]
    assert report[0]["row"] == originals[rows[0]]
    assert ("taken by target" if spread else "closest target") in report[0]["why"]
    assert result.coverage.tolist() == np.bincount(whose, minlength=3).tolist()
    if spread:
        assert result.coverage.tolist() == [3, 3, 3] and not result.uncovered


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_select_pool_writes_the_pool_format(tiny_encoder, tmp_path, ext):  # noqa: F811
    import pandas as pd

    rows = pool_rows()
    frame = pd.DataFrame(rows).assign(score=np.arange(len(rows), dtype=np.int32))
    pool = tmp_path / f"pool.{ext}"
    frame.to_csv(pool, index=False) if ext == "csv" else frame.to_parquet(pool, index=False)
    build_index(pool, tmp_path / "idx", str(tiny_encoder), backend="torch", progress=False)
    attributor = Attributor.load(tmp_path / "idx", backend="torch")
    select_pool(attributor, TARGETS, tmp_path / f"subset.{ext}", fraction=0.25)
    got = (
        pd.read_csv(tmp_path / "subset.csv")
        if ext == "csv"
        else pd.read_parquet(tmp_path / "subset.parquet")
    )
    assert len(got) == 6 and list(got.columns) == list(frame.columns)
    assert got["score"].is_monotonic_increasing  # pool order
    if ext == "parquet":
        import pyarrow.parquet as pq

        assert pq.read_schema(tmp_path / "subset.parquet") == pq.read_schema(pool)


def test_select_pool_refuses_bad_input_and_writes_nothing(attributor, pool_dir, tmp_path):
    out = tmp_path / "s.jsonl"
    with pytest.raises(InputError, match="no targets"):
        select_pool(attributor, [], out, count=3)
    with pytest.raises(InputError, match="is an input of this run"):
        select_pool(attributor, TARGETS, pool_dir / "pool.jsonl", count=3)
    with pytest.raises(ValueError, match="exactly one"):
        select_pool(attributor, TARGETS, out, count=3, fraction=0.1)
    with pytest.raises(ValueError, match="fraction must be"):
        select_pool(attributor, TARGETS, out, fraction=0)
    with pytest.raises(ValueError, match="how must be one of"):
        select_pool(attributor, TARGETS, out, count=3, how="median")
    assert not out.exists() and not (tmp_path / "s.selected.jsonl").exists()


def test_select_on_an_approximate_index(tiny_encoder, pool_dir, tmp_path):  # noqa: F811
    """hnsw on 300 rows searches (nearly) everything: the same choice as exact search."""
    build_index(
        pool_dir / "pool.jsonl",
        tmp_path / "h",
        str(tiny_encoder),
        backend="torch",
        approx="hnsw",
        progress=False,
    )
    approx = Attributor.load(tmp_path / "h", backend="torch")
    exact = Attributor.load(pool_dir / "idx", backend="torch")
    _, q = exact.encode(TARGETS)
    for spread in (False, True):
        a = select_rows(approx.index, q, 20, spread=spread)
        e = select_rows(exact.index, q, 20, spread=spread)
        assert len(set(a.rows.tolist()) & set(e.rows.tolist())) >= 18


# ---------------------------------------------------------------------------------------------
# CLI


def write_targets(path, texts=TARGETS):
    path.write_text(
        "".join(json.dumps({"id": f"t{i}", "response": t}) + "\n" for i, t in enumerate(texts))
    )
    return path


def test_cli_select(pool_dir, tmp_path):
    targets = write_targets(tmp_path / "targets.jsonl")
    out = tmp_path / "subset.jsonl"
    result = CliRunner().invoke(
        cli,
        [
            "select",
            str(pool_dir / "idx"),
            str(targets),
            "--fraction",
            "0.05",
            "--out",
            str(out),
            "--backend",
            "torch",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        "selected 15 of 300 pool samples (the 15 highest max cosines over 3 targets)"
        in result.output
    )
    assert len(out.read_text().splitlines()) == 15
    result = CliRunner().invoke(
        cli,
        [
            "select",
            str(pool_dir / "idx"),
            str(targets),
            "--count",
            "4",
            "--spread",
            "-o",
            str(out),
            "--backend",
            "torch",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "round robin over 3 targets" in result.output
    assert "every one of the 3 targets has at least one sample" in result.output
    report = [
        json.loads(line) for line in (tmp_path / "subset.selected.jsonl").read_text().splitlines()
    ]
    assert [r["target"]["id"] for r in report] == ["t0", "t1", "t2", "t0"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "X.jsonl"], "give exactly one of --fraction and --count"),
        (["--out", "X.jsonl", "--fraction", "0.1", "--count", "3"], "give exactly one of"),
        (["--out", "X.jsonl", "--fraction", "0"], "--fraction must be in (0, 1]"),
        (["--out", "X.jsonl", "--fraction", "1.5"], "--fraction must be in (0, 1]"),
        (["--out", "X.jsonl", "--count", "0"], "--count must be >= 1"),
        (["--out", "X.jsonl", "--count", "301"], "count must be between 1 and 300"),
        (["--out", "X.jsonl", "--count", "3", "--spread", "--aggregate", "mean"], "does not apply"),
        (["--out", "TARGETS", "--count", "3"], "is an input of this run"),
        (["--out", "X.txt", "--count", "3"], "unknown output type"),
    ],
)
def test_cli_select_errors_exit_2(pool_dir, tmp_path, args, message):
    targets = write_targets(tmp_path / "targets.jsonl")
    args = [
        str(targets) if a == "TARGETS" else str(tmp_path / a) if a.startswith("X") else a
        for a in args
    ]
    result = CliRunner().invoke(
        cli, ["select", str(pool_dir / "idx"), str(targets), *args, "--backend", "torch"]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "X.jsonl").exists()


def test_cli_select_empty_targets_exit_2(pool_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = CliRunner().invoke(
        cli,
        [
            "select",
            str(pool_dir / "idx"),
            str(empty),
            "--count",
            "3",
            "--out",
            str(tmp_path / "s.jsonl"),
        ],
    )
    assert result.exit_code == 2 and "empty.jsonl: no targets" in result.output
    result = CliRunner().invoke(
        cli, ["select", str(pool_dir / "idx"), "--count", "3", "--out", str(tmp_path / "s.jsonl")]
    )
    assert result.exit_code == 2 and "give TARGETS" in result.output


def test_help_has_examples():
    helped = CliRunner().invoke(cli, ["select", "--help"])
    assert helped.exit_code == 0 and "influcoder select runs/index task.jsonl" in helped.output
    assert "--spread" in helped.output and "--fraction" in helped.output
    helped = CliRunner().invoke(cli, ["attribute", "--help"])
    assert "--group-by" in helped.output and "--group-by source" in helped.output
    assert "select" in CliRunner().invoke(cli, ["--help"]).output
