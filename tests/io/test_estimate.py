"""--dry-run of collect, encode and index: an estimate from a few timed samples, nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from influcoder.cli import cli
from influcoder.io.estimate import timed_rows

from ..conftest import write_jsonl
from ..tiny_encoders import pool_rows


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _size(text: str, what: str) -> float:
    """The figure after ``what`` in the printed estimate, in bytes or seconds."""
    number, unit = re.search(rf"{what}\s+([\d.]+) (\w+)", text).groups()
    scale = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "s": 1, "min": 60, "h": 3600}
    return float(number) * scale[unit]


def _bytes_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _data(tmp_path, n=40):
    words = "the cat sat on a mat and then it ran to the sea".split()
    rows = [
        {
            "id": f"r{i}",
            "prompt": " ".join(words[i % 7 : i % 7 + 2 + i % 5]) + f" {i}?",
            "response": " ".join(words[i % 5 : i % 5 + 3 + i % 4]),
        }
        for i in range(n)
    ]
    return write_jsonl(tmp_path / "d.jsonl", rows)


def test_timed_rows_span_the_lengths():
    lengths = [5, 50, 7, 1, 30, 9, 100, 2]
    rows = timed_rows(lengths, 8, 3)
    assert 3 in rows and 6 in rows and len(rows) == 3  # the shortest and the longest
    assert timed_rows(lengths, 8, 100) == list(range(8))
    assert len(timed_rows(None, 8, 3)) == 3


def test_collect_dry_run_writes_nothing_and_predicts_the_store(tiny_model_dir, tmp_path):
    data = _data(tmp_path)
    args = [
        "--model",
        tiny_model_dir,
        "--warmup-steps",
        "4",
        "--sketch-dim",
        "256",
        "--max-length",
        "64",
        "--shard-rows",
        "8",
        "--dtype",
        "float32",
    ]
    r = run("collect", data, "-o", tmp_path / "pool", *args, "--dry-run")
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "pool").exists()
    assert "estimate for collect of 40 samples" in r.output
    assert "warm-up's time is extrapolated from its first 2 of 4 steps" in r.output
    # the two timed steps are no warm-up: neither its header nor its losses are printed
    assert "timing the LoRA warm-up on 2 of its 4 steps" in r.output
    assert "warm-up loss" not in r.output and "warming up" not in r.output
    assert _size(r.output, "time") > 0 and _size(r.output, "memory") > 50e6  # torch alone
    predicted = _size(r.output, "storage")
    assert run("collect", data, "-o", tmp_path / "pool", *args, "--quiet").exit_code == 0
    actual = _bytes_on_disk(tmp_path / "pool")
    assert 0.8 * actual <= predicted <= 1.2 * actual, (predicted, actual)


def test_collect_dry_run_of_a_resumed_store_writes_nothing(tiny_model_dir, tmp_path):
    data = _data(tmp_path, 12)
    args = [
        "--model",
        tiny_model_dir,
        "--adapter-init",
        "fresh",
        "--sketch-dim",
        "64",
        "--max-length",
        "64",
        "--quiet",
    ]
    assert run("collect", data, "-o", tmp_path / "pool", *args).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "pool").rglob("*")}
    r = run("collect", data, "-o", tmp_path / "pool", *args, "--dry-run")
    assert r.exit_code == 0 and "estimate for collect of 12 samples" in r.output
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "pool").rglob("*")} == before


@pytest.mark.parametrize("approx", ["flat", "hnsw", "ivf"])
def test_index_dry_run_writes_nothing_and_predicts_the_index(tiny_encoder, tmp_path, approx):
    data = write_jsonl(tmp_path / "pool.jsonl", pool_rows())
    r = run("index", tiny_encoder, data, "-o", tmp_path / "idx", "--approx", approx, "--dry-run")
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "idx").exists() and "estimate for encode of" in r.output
    predicted = _size(r.output, "storage")
    assert (
        run(
            "index", tiny_encoder, data, "-o", tmp_path / "idx", "--approx", approx, "--quiet"
        ).exit_code
        == 0
    )
    actual = _bytes_on_disk(tmp_path / "idx")
    # small files (manifests, statistics, the ONNX export for queries) are not predicted
    onnx = sum(p.stat().st_size for p in (tmp_path / "idx").rglob("*.onnx"))
    assert 0.5 * (actual - onnx) <= predicted <= 1.5 * (actual - onnx), (predicted, actual)


def test_encode_dry_run_writes_nothing(tiny_encoder, tmp_path):
    data = write_jsonl(tmp_path / "pool.jsonl", pool_rows())
    r = run("encode", data, "-e", tiny_encoder, "-o", tmp_path / "emb", "--dry-run")
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "emb").exists() and "s/sample" in r.output
    assert "workers" not in r.output
    r = run(
        "encode", data, "-e", tiny_encoder, "-o", tmp_path / "emb", "--dry-run", "--engine", "ray"
    )
    assert r.exit_code == 0 and "not on --engine ray's workers" in r.output
    assert not (tmp_path / "emb").exists()


def test_dry_run_is_in_the_help():
    for command in ("collect", "encode", "index"):
        r = run(command, "--help")
        assert r.output.count("--dry-run") >= 2, r.output  # the option and an example
