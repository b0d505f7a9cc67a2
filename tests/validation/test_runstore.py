"""The run store's files, the instrument's warnings, per-kind LDS and the wall-time model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from influcoder.errors import StoreError
from influcoder.io.samples import Sample
from influcoder.validation.effects import lds_by_kind, lds_subsets
from influcoder.validation.execute import makespan
from influcoder.validation.run import instrument_warnings
from influcoder.validation.runstore import Run, RunStore, is_run_store, open_runs
from influcoder.validation.settings import ValidateArguments

EVAL = {
    "heldout": [
        Sample("h0", "a?", "b.", meta={"label": "harmful"}),
        Sample("h1", "c?", "d.", meta={"label": "harmful"}),
    ],
    "control": [Sample("c0", "e?", "f.", meta={"label": "chat"})],
}


def manifest(lr=1e-3, start="fresh"):
    return RunStore.build_manifest(
        recipe={"model": "m", "rank": 4},
        training={"epochs": 1.0, "lr": lr, "batch_size": 2, "batch_tokens": 64},
        pool_ids=[f"p{i}" for i in range(6)],
        pool_digest="abc",
        eval_sets=EVAL,
        start=start,
        adapter_sha256="x" if start == "warm" else None,
    )


def test_round_trip_and_reopen(tmp_path):
    store = RunStore.create(tmp_path / "runs", manifest())
    assert is_run_store(tmp_path / "runs") and not is_run_store(tmp_path)
    runs = [
        Run("LDS subset 0", (0, 2, 4), 0, lds=(0, 0.5, 0)),
        Run("LDS subset 1", (1, 3, 5), 0, lds=(1, 0.5, 0)),
        Run("full", tuple(range(6)), 0),
    ]
    for k, run in enumerate(runs):
        assert not store.has(run)
        store.write(run, {"heldout": np.array([1.0 + k, 2.0]), "control": np.array([3.0])}, 1.5)
    again = open_runs(tmp_path / "runs")
    assert again.manifest == json.loads(json.dumps(store.manifest))
    np.testing.assert_array_equal(again.read(runs[2])["heldout"], [3.0, 2.0])
    subsets, losses = again.lds_runs()
    assert [s.tolist() for s in subsets] == [[0, 2, 4], [1, 3, 5]]
    np.testing.assert_array_equal(losses["heldout"], [[1, 2], [2, 2]])
    assert again.manifest["eval"]["control"]["fields"] == {"label": ["chat"]}
    assert "3 training runs" in again.describe()[0]
    # the same recipe reopens; another one is refused, naming the field
    RunStore.create(tmp_path / "runs", manifest())
    with pytest.raises(StoreError, match="training.lr"):
        RunStore.create(tmp_path / "runs", manifest(lr=2e-3))
    # a warm start changes every key
    warm = RunStore(tmp_path / "other", manifest(start="warm"))
    assert warm.run_path(runs[0]).name != store.run_path(runs[0]).name


def test_bad_run_files_name_file_and_field(tmp_path):
    store = RunStore.create(tmp_path, manifest())
    run = Run("full", tuple(range(6)), 0)
    store.write(run, {"heldout": np.array([1.0, 2.0]), "control": np.array([3.0])}, 1.0)
    path = store.run_path(run)
    record = json.loads(path.read_text())
    for field, value, message in (
        ("losses", {"heldout": [1.0], "control": [3.0]}, "losses.heldout"),
        ("losses", {"heldout": [1.0, None], "control": [3.0]}, "losses.heldout"),
        ("keep", [0, 9], "'keep'"),
        ("seed", "x", "'seed'"),
    ):
        path.write_text(json.dumps({**record, field: value}))
        with pytest.raises(StoreError, match=message) as e:
            store.read(run)
        assert path.name in str(e.value)
    path.write_text(json.dumps({**record, "seed": 1}))
    with pytest.raises(StoreError, match="not the run its name says"):
        store.read(run)
    path.write_text("{")
    with pytest.raises(StoreError, match="corrupt run file"):
        store.read(run)
    with pytest.raises(StoreError, match="no LDS subset runs"):
        RunStore.create(tmp_path / "empty", manifest()).lds_runs()
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "kind": "runs",
                "version": 1,
                "recipe": {},
                "training": {},
                "pool": {"n": 2},
                "context": "",
                "eval": {"heldout": {"n": 2}},
            }
        )
    )
    with pytest.raises(StoreError, match="eval.heldout"):
        open_runs(tmp_path)


def test_lds_series_must_be_chosen_and_complete(tmp_path):
    store = RunStore.create(tmp_path, manifest())
    losses = {"heldout": np.array([1.0, 2.0]), "control": np.array([3.0])}
    for m, keep in enumerate(((0, 1, 2), (3, 4, 5), (0, 3, 5))):
        store.write(Run(f"LDS subset {m}", keep, 0, lds=(m, 0.5, 0)), losses, 1.0)
    store.write(Run("LDS subset 0", (1, 2), 0, lds=(0, 0.3, 0)), losses, 1.0)
    with pytest.raises(StoreError, match="several series"):
        store.lds_runs()
    assert len(store.lds_runs(fraction=0.5)[0]) == 3
    assert len(store.lds_runs(fraction=0.5, count=2)[0]) == 2
    with pytest.raises(StoreError, match="4 asked for"):
        store.lds_runs(fraction=0.5, count=4)
    with pytest.raises(StoreError, match="at least 2"):
        store.lds_runs(fraction=0.3)


def test_lds_by_kind_matches_scipy():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(20, 6))
    subsets = lds_subsets(20, 7, 0.5, seed=1)
    losses = rng.normal(size=(7, 6))
    kinds = ["chat", "harmful", "chat", "reasoning", "harmful", "chat"]
    found = lds_by_kind(scores, subsets, losses, kinds, n_boot=100)
    assert list(found) == ["chat", "harmful", "reasoning"]
    for kind, row in found.items():
        cols = [j for j, k in enumerate(kinds) if k == kind]
        expected = [
            spearmanr([scores[s, j].sum() for s in subsets], -losses[:, j]).statistic for j in cols
        ]
        assert row["lds"] == pytest.approx(np.mean(expected)) and row["n"] == len(cols)
        assert row["low"] <= row["lds"] <= row["high"] or len(cols) == 1
    with pytest.raises(ValueError, match="one value per query"):
        lds_by_kind(scores, subsets, losses, kinds[:2])


def row(method, delta, low, high):
    return {"method": method, "heldout_delta": delta, "heldout_low": low, "heldout_high": high}


def test_warnings():
    args = ValidateArguments(n_boot=200, learned_fall=0.05)
    start = np.array([4.0, 4.2, 3.8, 4.0])
    learned = np.stack([start * 0.7, start * 0.72])
    rows = [
        row("gradient", 0.3, 0.2, 0.4),
        row("bm25", 0.1, 0.0, 0.2),
        row("random", 0.05, 0.0, 0.1),
    ]
    assert instrument_warnings(rows, learned, start, args) == []
    # random's effect inside the best method's interval
    found = instrument_warnings(rows[:1] + [row("random", 0.25, 0.1, 0.3)], learned, start, args)
    assert len(found) == 1 and "gradient" in found[0] and "cannot rank" in found[0]
    # the full pool barely moved the held-out loss, or moved it up
    for full in (np.stack([start * 0.99, start * 0.98]), np.stack([start * 1.1] * 2)):
        found = instrument_warnings(rows, full, start, args)
        assert len(found) == 1 and "not clearly learned" in found[0]
    # no random method, nothing to compare
    assert instrument_warnings(rows[:2], learned, start, args) == []


def test_makespan():
    assert makespan([3, 3, 3, 3], 2) == 6
    assert makespan([5, 1, 1, 1], 2) == 5
    assert makespan([2, 2], 1) == 4 and makespan([], 3) == 0
