"""``influcoder distill-runs`` end to end on a tiny encoder: a synthetic run store written through
the real run-store API (each query helped by the pool samples of its topic), training that
lowers the held-out ranking loss, the saved encoder scored by ``influcoder lds``, refining a
distilled encoder, and bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from influcoder.cli import cli
from influcoder.io.samples import Sample
from influcoder.io.stores import samples_digest
from influcoder.validation.runstore import LDS_LABEL, Run, RunStore

from ..conftest import write_store
from ..tiny_encoders import POOL

N_RUNS = 24
TRAIN = ["--epochs", "3", "--lr", "1e-3", "--batch-pool", "12", "--batch-query", "8", "-q"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def write_run_store(path, pool, queries, helped, seed=0):
    """LDS subset runs of half the pool: a query's loss drops by 1 for each pool sample of
    ``helped[:, j]`` in the subset, plus a little noise."""
    store = RunStore.create(
        path,
        RunStore.build_manifest(
            recipe={"model": "synthetic"},
            training={"epochs": 1},
            pool_ids=[s.id for s in pool],
            pool_digest=samples_digest(pool),
            eval_sets={"heldout": queries},
        ),
    )
    rng = np.random.default_rng(seed)
    for m in range(N_RUNS):
        keep = np.sort(rng.choice(len(pool), size=len(pool) // 2, replace=False))
        inside = np.zeros(len(pool))
        inside[keep] = 1.0
        losses = 3.0 - inside @ helped + 0.05 * rng.normal(size=len(queries))
        run_ = Run(f"{LDS_LABEL} {m}", tuple(int(i) for i in keep), 0, lds=(m, 0.5, 0))
        store.write(run_, {"heldout": losses}, seconds=1.0)
    return store


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    pool = [Sample(id=f"p{i}", prompt=p, response=r) for i, (p, r) in enumerate(POOL)]
    queries = [
        Sample(id=f"q{i}", prompt=p.replace("?", " please?"), response=r)
        for i, (p, r) in enumerate(POOL[:16])
    ]
    helped = np.zeros((len(pool), len(queries)))
    for j in range(len(queries)):
        helped[j, j] = 1.0  # each query is helped by the pool sample it paraphrases
    rng = np.random.default_rng(0)
    write_store(tmp / "pool", rng.normal(size=(len(pool), 8)), pool)
    write_store(tmp / "heldout", rng.normal(size=(len(queries), 8)), queries)
    write_run_store(tmp / "v" / "runs", pool, queries, helped)
    return tmp


def test_distill_runs_trains_saves_and_scores(stores, tiny_encoder, tmp_path):
    out = tmp_path / "airrep"
    r = run("distill-runs", stores / "v/runs", stores / "pool", stores / "heldout", "-o", out,
            "--encoder", tiny_encoder, *TRAIN)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert f"{N_RUNS} subset runs, 16 measured queries, pool of 24" in r.output
    assert "epoch 3: train_loss" in r.output
    card = json.loads((out / "influcoder_runs.json").read_text())
    assert card["runs"]["n"] == N_RUNS and len(card["runs"]["train"]) == 18
    assert len(card["runs"]["heldout"]) == 6 and len(card["queries"]["heldout_ids"]) == 4
    assert set(card["runs"]["train"]).isdisjoint(card["runs"]["heldout"])
    assert card["base_encoder"] == str(tiny_encoder) and card["pooling"] == {"kind": "sum"}
    assert [h["epoch"] for h in card["history"]] == [1, 2, 3]
    # the objective on runs and queries no step saw went down
    assert card["history"][-1]["ranking_loss"] < card["untrained"]["ranking_loss"]
    assert not (out / "influcoder_distill.json").exists()
    # the saved encoder is a method of `influcoder lds`
    rows_file = tmp_path / "lds.json"
    r = run("lds", stores / "v/runs", stores / "pool", stores / "heldout", "-e",
            f"airrep={out}", "--baselines", "none", "--n-boot", "20", "--json", rows_file)  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = {row["method"]: row for row in json.loads(rows_file.read_text())["rows"]}
    assert set(rows) == {"gradient", "airrep"} and rows["airrep"]["lds_subsets"] == N_RUNS
    assert -1 <= rows["airrep"]["lds"] <= 1


def test_refine_keeps_the_distillation_card_and_learns_attention(stores, tiny_encoder, tmp_path):
    distilled = tmp_path / "distilled"
    shutil.copytree(tiny_encoder, distilled)
    (distilled / "influcoder_distill.json").write_text('{"format": "influcoder-distill"}')
    out = tmp_path / "refined"
    r = run("distill-runs", stores / "v/runs", stores / "pool", stores / "heldout", "-o", out,
            "--encoder", distilled, "--pooling", "attention", "--train-runs", "8", *TRAIN)  # fmt: skip
    assert r.exit_code == 0, r.output
    card = json.loads((out / "influcoder_runs.json").read_text())
    assert len(card["runs"]["train"]) == 8 and card["args"]["train_runs"] == 8
    assert card["pooling"]["kind"] == "attention" and any(card["pooling"]["weight"])
    assert json.loads((out / "influcoder_distill.json").read_text())["format"] == (
        "influcoder-distill"
    )


def test_bad_input_is_a_clean_error(stores, tiny_encoder, tmp_path):
    args = [stores / "v/runs", stores / "pool", stores / "heldout", "-o", tmp_path / "x"]
    r = run("distill-runs", *args, "--encoder", tiny_encoder, "--heldout-runs", "1.5", "-q")
    assert r.exit_code == 2 and "heldout_runs must be in [0, 1)" in r.output
    r = run("distill-runs", *args, "--encoder", tiny_encoder, "--heldout-runs", "0.99", "-q")
    assert (
        r.exit_code == 2 and "too few runs or queries to split: 24 runs (24 held out)" in r.output
    )
    r = run("distill-runs", *args, "--encoder", tiny_encoder, "--train-runs", "40", "-q")
    assert r.exit_code == 2 and "train_runs=40 asked for, 18 training runs" in r.output
    r = run("distill-runs", stores / "v/runs", stores / "heldout", stores / "heldout", "-o",
            tmp_path / "x", "--encoder", tiny_encoder, "-q")  # fmt: skip
    assert r.exit_code == 2 and "pool.samples_sha256" in r.output
    assert not (tmp_path / "x").exists()
