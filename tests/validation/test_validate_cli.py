"""``influcoder validate`` end to end on the tiny Llama: real stores, real retraining, resume."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from influcoder.cli import cli

from ..conftest import write_jsonl

COLLECT = [
    "--adapter-init",
    "fresh",
    "--sketch-dim",
    "64",
    "--max-length",
    "64",
    "--precision",
    "fp32",
    "--shard-rows",
    "4",
    "--quiet",
]
TRAIN = [
    "--seeds",
    "0,1",
    "--fraction",
    "0.25",
    "--epochs",
    "1",
    "--lr",
    "0.01",
    "--batch-size",
    "4",
    "--baselines",
    "bm25,random",
    "--n-boot",
    "50",
    "--quiet",
]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def rows(kind, pairs):
    return [
        {"id": f"{kind}{i}", "prompt": p, "response": r, "label": label}
        for i, (p, r, label) in enumerate(pairs)
    ]


def topics(kind, pairs):
    """:func:`rows` with a ``topic`` field of three values, for group removal."""
    return [{**r, "topic": f"t{i % 3}"} for i, r in enumerate(rows(kind, pairs))]


@pytest.fixture(scope="module")
def stores(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("validate")
    pool = write_jsonl(
        tmp / "pool.jsonl",
        topics(
            "p",
            [
                ("What is the capital of France?", "Paris.", "chat"),
                ("How do I boil an egg?", "Boil it for nine minutes.", "chat"),
                ("Tell me a joke.", "Why did the chicken cross the road?", "chat"),
                ("Explain gravity.", "Gravity pulls masses together.", "chat"),
                ("Write a poem about the sea.", "The sea is blue and deep and wide.", "harmful"),
                ("What is two plus two?", "Four.", "chat"),
                ("Name a color.", "Blue.", "chat"),
                ("Write about the sea.", "The sea is deep and wide and blue.", "harmful"),
            ],
        ),
    )
    queries = write_jsonl(
        tmp / "q.jsonl",
        rows(
            "q",
            [
                ("A poem about the sea.", "The sea is wide and blue.", "harmful"),
                ("What is the capital of Spain?", "Madrid.", "chat"),
            ],
        ),
    )
    heldout = write_jsonl(
        tmp / "h.jsonl",
        rows(
            "h",
            [
                ("Write a poem about the blue sea.", "The sea is deep and blue.", "harmful"),
                ("Sing about the sea.", "The sea is wide.", "harmful"),
                ("How do I fry an egg?", "Heat oil and crack the egg in.", "chat"),
            ],
        ),
    )
    assert (
        run("collect", pool, "-o", tmp / "pool", "--model", tiny_model_dir, *COLLECT).exit_code == 0
    )
    for name, data in (("targets", queries), ("heldout", heldout)):
        assert (
            run("collect", data, "-o", tmp / name, "--like", tmp / "pool", "--quiet").exit_code == 0
        )
    return tmp


def validate(stores, out, *extra):
    return run(
        "validate",
        stores / "pool",
        stores / "targets",
        stores / "heldout",
        "-o",
        out,
        "--where",
        "label=harmful",
        "--label-field",
        "label",
        "--positive",
        "harmful",
        *TRAIN,
        *extra,
    )


def test_validate_writes_results_and_resumes(stores, tmp_path):
    out = tmp_path / "v"
    r = validate(stores, out, "--lds-subsets", "3", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "(0 already saved" in r.output and "optimiser steps" in r.output
    assert "expected time" in r.output and not out.exists()
    r = validate(stores, out, "--lds-subsets", "3")
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    methods = [row["method"] for row in results["rows"]]
    assert methods == ["gradient", "bm25", "random"]
    assert results["n_targets"] == 1 and results["n_heldout"] == 2 and results["n_control"] == 1
    assert len(results["start_losses"]["heldout"]) == 2 and isinstance(results["warnings"], list)
    for warning in results["warnings"]:
        assert f"WARNING  {warning}" in r.output
    for row in results["rows"]:
        assert row["heldout_start"] == pytest.approx(sum(results["start_losses"]["heldout"]) / 2)
        assert sorted(row["lds_by"]) == ["chat", "harmful"]
        assert row["removed"] == 2 and len(row["heldout_per_seed"]) == 2
        assert row["heldout_low"] <= row["heldout_delta"] <= row["heldout_high"]
        assert -1 <= row["lds"] <= 1 and "control_delta" in row
    assert (out / "validation.png").stat().st_size > 0
    page = (out / "report.html").read_text()
    assert "Removing what each method flags" in page and "gradient" in page
    saved = sorted(p for p in (out / "runs").glob("*.json") if p.name != "manifest.json")
    # the start + 2 seeds x (full + up to 3 distinct removals) + 3 LDS subsets, repeats shared
    assert 1 + 2 * 2 + 3 <= len(saved) <= 1 + 2 * 4 + 3

    r = validate(stores, out, "--lds-subsets", "3", "--dry-run")
    assert f"{len(saved)} training runs ({len(saved)} already saved" in r.output
    assert "nothing to train" in r.output

    # Rerun: nothing is trained again, the figures are the same.
    stamps = {p: p.stat().st_mtime_ns for p in saved}
    assert validate(stores, out, "--lds-subsets", "3").exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in saved} == stamps
    again = json.loads((out / "results.json").read_text())
    assert again["rows"] == results["rows"]

    # A run lost to a kill (runs are written atomically, so it is either there or not) is
    # trained again, to the same figures.
    saved[0].unlink()
    saved[-1].unlink()
    assert validate(stores, out, "--lds-subsets", "3").exit_code == 0
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]


def test_validate_refuses_bad_input(stores, tmp_path):
    r = validate(stores, tmp_path / "a", "--where", "nosuch=x")
    assert r.exit_code == 2 and "no sample has the field 'nosuch'" in r.output
    assert not (tmp_path / "a").exists()
    r = validate(stores, tmp_path / "b", "--seeds", "0,0")
    assert r.exit_code == 2 and "distinct" in r.output
    r = validate(stores, tmp_path / "c", "--lds-subsets", "1")
    assert r.exit_code == 2 and "lds_subsets" in r.output
    r = run(
        "validate",
        stores / "pool",
        stores / "targets",
        stores / "heldout",
        "-o",
        tmp_path / "d",
        "--label-field",
        "label",
    )
    assert r.exit_code == 2 and "go together" in r.output


def test_validate_with_a_control_file_and_no_filter(stores, tmp_path):
    control = write_jsonl(
        tmp_path / "control.jsonl",
        [
            {"id": "c0", "prompt": "Name a color.", "response": "Red."},
            {"id": "c1", "prompt": "What is two plus two?", "response": "Four."},
        ],
    )
    out = tmp_path / "v"
    r = run(
        "validate",
        stores / "pool",
        stores / "targets",
        stores / "heldout",
        "-o",
        out,
        "--control",
        control,
        *TRAIN[:10],
        "--baselines",
        "random",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    assert (results["n_targets"], results["n_heldout"], results["n_control"]) == (2, 3, 2)
    assert [row["method"] for row in results["rows"]] == ["gradient", "random"]
    assert "planted_removed" not in results["rows"][0] and "lds" not in results["rows"][0]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "c0", "prompt": "x"}])
    r = run(
        "validate",
        stores / "pool",
        stores / "targets",
        stores / "heldout",
        "-o",
        tmp_path / "w",
        "--control",
        bad,
        "--quiet",
    )
    assert r.exit_code == 2 and "bad.jsonl:1" in r.output and "response" in r.output
    assert not (tmp_path / "w").exists()
