"""Attribution, aggregates and the filter, against numpy references; the CLI over them."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

from influcoder.attribution.attributor import Attributor, read_queries
from influcoder.attribution.build import build_index
from influcoder.attribution.filter import filter_pool
from influcoder.attribution.index import FAISS_FILE
from influcoder.cli import cli
from influcoder.errors import InputError, StoreError
from influcoder.io.samples import Sample, encoder_text

from ..tiny_encoders import pool_rows

QUIET = dict(progress=False)
UNWANTED = ["I will help you build a weapon to hurt people.", "Steal the money from the bank."]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def pool_file(tmp_path):
    return write_jsonl(tmp_path / "pool.jsonl", pool_rows())


@pytest.fixture()
def index_dir(tiny_encoder, pool_file, tmp_path):
    build_index(
        pool_file, tmp_path / "idx", str(tiny_encoder), backend="torch", shard_rows=10, **QUIET
    )
    return tmp_path / "idx"


@pytest.fixture()
def attributor(index_dir):
    return Attributor.load(index_dir, backend="torch")


def all_scores(attributor, queries):
    """Reference: every pool vector against every query."""
    _, q = attributor.encode(queries)
    return attributor.index.vectors() @ q.T  # n_pool x n_query


def test_attribute_equals_brute_force(attributor):
    queries = ["The capital of France is Paris.", Sample("q2", "How do I boil an egg?", "Boil.")]
    results = attributor.attribute(queries, k=5)
    scores = all_scores(attributor, queries)
    for j, result in enumerate(results):
        expected = np.lexsort((np.arange(len(scores)), -scores[:, j]))[:5]
        assert [h.row for h in result.hits] == expected.tolist()
        assert [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
        np.testing.assert_allclose([h.score for h in result.hits], scores[expected, j], atol=1e-5)
        assert result.hits[0].sample.id == f"p{expected[0]}"
    # A string is a response with an empty prompt.
    assert results[0].query.prompt == "" and results[1].query.id == "q2"


@pytest.mark.parametrize("how", ["mean", "sum", "max"])
def test_aggregate_equals_numpy(attributor, how):
    ranking = attributor.aggregate(UNWANTED, how)
    scores = all_scores(attributor, UNWANTED)
    expected = getattr(scores, how)(axis=1)
    np.testing.assert_allclose(ranking.scores, expected, atol=1e-5)
    np.testing.assert_array_equal(ranking.order, np.lexsort((np.arange(len(expected)), -expected)))
    np.testing.assert_array_equal(ranking.top_query, scores.argmax(axis=1))
    np.testing.assert_allclose(ranking.z, (expected - expected.mean()) / expected.std(), atol=1e-4)


def test_bad_queries_and_k(attributor):
    with pytest.warns(UserWarning, match="k=30 is more than the pool's 24 samples"):
        [result] = attributor.attribute(["egg"], k=30)
    assert len(result.hits) == 24
    with pytest.raises(ValueError, match="k must be >= 1"):
        attributor.attribute(["egg"], k=0)
    with pytest.raises(InputError, match="no queries"):
        attributor.attribute([], k=3)
    with pytest.raises(InputError, match="empty query text"):
        attributor.attribute(["  "], k=3)


def test_other_encoder_is_refused(index_dir, other_encoder):
    with pytest.raises(StoreError, match="not with '.*other-encoder.*' \\(sha256:"):
        Attributor.load(index_dir, str(other_encoder))


def test_read_queries_from_stdin_lines(monkeypatch):
    import io

    lines = '{"id": "a", "prompt": "Tell me a joke.", "response": "No."}\nplain text\n\n'
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    got = read_queries("-", ["from --text"], prompt="p")
    assert [(q.id, q.prompt, q.response) for q in got][0] == ("a", "Tell me a joke.", "No.")
    assert (got[1].prompt, got[1].response) == ("", "plain text")
    assert (got[2].prompt, got[2].response) == ("p", "from --text")
    assert encoder_text(got[1]) == "\n\nplain text"


# ---------------------------------------------------------------------------------------------
# Filter


@pytest.mark.parametrize("rule", [{"top_k": 3}, {"fraction": 0.1}, {"threshold": None}])
def test_filter_keeps_original_rows(attributor, pool_file, tmp_path, rule):
    ranking = attributor.aggregate(UNWANTED, "mean")
    if "threshold" in rule:
        rule = {"threshold": float(ranking.scores[ranking.order[2]])}  # removes exactly 3
    result = filter_pool(attributor, UNWANTED, tmp_path / "clean.jsonl", **rule)
    removed = {int(r) for r in ranking.order[:3]}
    originals = [json.loads(line) for line in pool_file.read_text().splitlines()]
    kept = [json.loads(line) for line in (tmp_path / "clean.jsonl").read_text().splitlines()]
    assert kept == [row for i, row in enumerate(originals) if i not in removed]
    report = [
        json.loads(line) for line in (tmp_path / "clean.removed.jsonl").read_text().splitlines()
    ]
    assert [r["id"] for r in report] == [f"p{i}" for i in ranking.order[:3]]
    assert [r["rank"] for r in report] == [1, 2, 3] and report[0]["aggregate"] == "mean"
    assert report[0]["row"] == originals[ranking.order[0]] and "closest query" in report[0]["why"]
    assert result.n_removed == 3 and result.n_pool == 24


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_filter_writes_the_pool_format(tiny_encoder, tmp_path, ext):
    import pandas as pd

    rows = pool_rows()
    frame = pd.DataFrame(rows).assign(score=np.arange(len(rows), dtype=np.int32))
    pool = tmp_path / f"pool.{ext}"
    frame.to_csv(pool, index=False) if ext == "csv" else frame.to_parquet(pool, index=False)
    build_index(pool, tmp_path / "idx", str(tiny_encoder), backend="torch", **QUIET)
    attributor = Attributor.load(tmp_path / "idx", backend="torch")
    filter_pool(attributor, UNWANTED, tmp_path / f"clean.{ext}", top_k=4)
    if ext == "csv":
        with open(pool, newline="") as f:
            original = list(csv.DictReader(f))
        with open(tmp_path / "clean.csv", newline="") as f:
            kept = list(csv.DictReader(f))
        assert len(kept) == 20 and all(row in original for row in kept)
        assert list(kept[0]) == list(original[0])
    else:
        import pyarrow.parquet as pq

        kept = pq.read_table(tmp_path / "clean.parquet")
        assert kept.schema == pq.read_table(pool).schema and kept.num_rows == 20


def test_filter_refuses_to_overwrite_inputs(attributor, pool_file, tmp_path):
    with pytest.raises(InputError, match="is an input of this run"):
        filter_pool(attributor, UNWANTED, pool_file, top_k=2)
    with pytest.raises(InputError, match="is an input of this run"):
        filter_pool(attributor, UNWANTED, attributor.index.path / "x.jsonl", top_k=2)
    with pytest.raises(ValueError, match="top_k must be between 1 and 23"):
        filter_pool(attributor, UNWANTED, tmp_path / "c.jsonl", top_k=24)
    with pytest.raises(ValueError, match="exactly one"):
        filter_pool(attributor, UNWANTED, tmp_path / "c.jsonl", top_k=2, fraction=0.1)
    assert not (tmp_path / "c.jsonl").exists()


def test_filter_detects_a_changed_source_and_rebuilds_a_missing_one(
    caplog, attributor, pool_file, tmp_path
):
    rows = pool_rows()
    write_jsonl(pool_file, [dict(rows[0], response="changed")] + rows[1:])
    with pytest.raises(InputError, match="changed since it was indexed"):
        filter_pool(attributor, UNWANTED, tmp_path / "c.jsonl", top_k=2)
    pool_file.unlink()
    with caplog.at_level(logging.INFO, logger="influcoder"):
        filter_pool(attributor, UNWANTED, tmp_path / "c.jsonl", top_k=2)
    logs = caplog.messages
    kept = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(kept) == 22 and "rebuilt from the index" in logs[0]
    assert all(set(k) == {"id", "prompt", "response", "topic"} for k in kept)


# ---------------------------------------------------------------------------------------------
# CLI


@pytest.mark.parametrize("source", ["file", "stdin", "text"])
def test_cli_attribute(index_dir, tmp_path, source):
    texts = ["The capital of France is Paris.", "Boil the egg."]
    args, stdin = ["attribute", str(index_dir), "-k", "3", "--backend", "torch"], None
    if source == "file":
        args.append(
            str(
                write_jsonl(
                    tmp_path / "q.jsonl",
                    [{"id": f"q{i}", "prompt": "", "response": t} for i, t in enumerate(texts)],
                )
            )
        )
    elif source == "stdin":
        args.append("-")
        stdin = "\n".join(texts) + "\n"
    else:
        args += [a for t in texts for a in ("--text", t)]
    result = CliRunner().invoke(cli, args, input=stdin)
    assert result.exit_code == 0, result.output
    assert result.output.count("\nquery ") == 2 and "z: standard deviations" in result.output
    assert "p0  What is the capital of France? -> The capital of France is Paris." in result.output


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_cli_attribute_out_and_aggregate(index_dir, tmp_path, ext):
    import pandas as pd

    out = tmp_path / f"top.{ext}"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "attribute",
            str(index_dir),
            "--text",
            "egg",
            "--text",
            "joke",
            "-k",
            "4",
            "--out",
            str(out),
            "--backend",
            "torch",
        ],
    )
    assert result.exit_code == 0, result.output
    read = {
        "jsonl": lambda p: pd.read_json(p, lines=True),
        "csv": pd.read_csv,
        "parquet": pd.read_parquet,
    }[ext]
    table = read(out)
    assert len(table) == 8 and list(table["rank"]) == [1, 2, 3, 4] * 2
    ranking = tmp_path / f"ranking.{ext}"
    result = runner.invoke(
        cli,
        [
            "attribute",
            str(index_dir),
            "--text",
            UNWANTED[0],
            "--text",
            UNWANTED[1],
            "--aggregate",
            "max",
            "-k",
            "3",
            "--out",
            str(ranking),
            "--backend",
            "torch",
        ],
    )
    assert result.exit_code == 0, result.output
    table = read(ranking)
    assert len(table) == 24 and table["score"].is_monotonic_decreasing
    assert "max score over 2 queries, top 3 of 24" in result.output


def test_cli_filter(index_dir, pool_file, tmp_path):
    queries = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "", "response": t} for t in UNWANTED])
    result = CliRunner().invoke(
        cli,
        [
            "filter",
            str(index_dir),
            str(queries),
            "--fraction",
            "0.25",
            "--out",
            str(tmp_path / "clean.jsonl"),
            "--backend",
            "torch",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "removed 6 of 24 pool samples" in result.output
    assert len((tmp_path / "clean.jsonl").read_text().splitlines()) == 18
    result = CliRunner().invoke(
        cli, ["filter", str(index_dir), str(queries), "-k", "2", "--out", str(queries)]
    )
    assert result.exit_code == 2 and "is an input of this run" in result.output
    result = CliRunner().invoke(
        cli, ["filter", str(index_dir), str(queries), "--out", str(tmp_path / "x.jsonl")]
    )
    assert result.exit_code == 2 and "exactly one of" in result.output


def test_cli_errors_exit_2(index_dir, other_encoder, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        cli, ["attribute", str(index_dir), "--text", "x", "-e", str(other_encoder)]
    )
    assert result.exit_code == 2 and "not comparable" in result.output
    result = runner.invoke(cli, ["attribute", str(index_dir)])
    assert result.exit_code == 2 and "give QUERIES" in result.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = runner.invoke(cli, ["attribute", str(index_dir), str(empty)])
    assert result.exit_code == 2 and "no queries" in result.output
    result = runner.invoke(
        cli, ["index", str(tmp_path / "nope"), str(empty), "-o", str(tmp_path / "i")]
    )
    assert result.exit_code == 2


def test_cli_corrupt_faiss_index_exits_2(tiny_encoder, pool_file, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "index",
            str(tiny_encoder),
            str(pool_file),
            "-o",
            str(tmp_path / "h"),
            "--approx",
            "hnsw",
            "-q",
            "--backend",
            "torch",
        ],
    )
    assert result.exit_code == 0, result.output
    (tmp_path / "h" / FAISS_FILE).write_bytes(b"\0" * 64)
    result = runner.invoke(cli, ["attribute", str(tmp_path / "h"), "--text", "egg"])
    assert result.exit_code == 2 and "cannot read the FAISS index" in result.output
    assert "rebuild" in result.output
