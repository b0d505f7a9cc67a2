"""airrep_curve.py end to end on the tiny encoders and the synthetic run store of the
distill-runs tests: every method judged on the same held-out runs and queries."""

from __future__ import annotations

import json

from tests.benchmarks.test_bench_peers import _bench
from tests.workflows.test_distill_runs import N_RUNS, stores  # noqa: F401


def test_curve_runs_end_to_end(stores, tiny_encoder, other_encoder, tmp_path):  # noqa: F811
    out = tmp_path / "curve.json"
    result = _bench("airrep_curve").main(
        [str(stores / "v/runs"), str(stores / "pool"), str(stores / "heldout"),
         "--encoder-from", str(other_encoder), "--base", str(tiny_encoder), "--ks", "4,all",
         "--epochs", "2", "--lr", "1e-3", "--batch-pool", "12", "--n-boot", "20", "--json", str(out)]
    )  # fmt: skip
    assert result["split"]["heldout_runs"] == N_RUNS // 4
    found = [(r["method"], r["runs"]) for r in result["rows"]]
    assert found == [
        ("gradient", None), ("bm25", None), ("random", None), ("untrained", None),
        ("distilled", None), ("runs", 4), ("distilled+runs", 4), ("runs", 18),
        ("distilled+runs", 18),
    ]  # fmt: skip
    for row in result["rows"]:
        assert -1 <= row["low"] <= row["high"] <= 1 and -1 <= row["lds"] <= 1, row
        assert (row["cpu_seconds"] is None) == (row["runs"] is None)
        assert row["cpu_seconds"] is None or row["cpu_seconds"] > 0
    lds = {(r["method"], r["runs"]): r["lds"] for r in result["rows"]}
    assert lds[("runs", 18)] != lds[("untrained", None)]  # training moved the encoder
    assert lds[("distilled+runs", 18)] != lds[("distilled", None)]
    assert json.loads(out.read_text())["rows"] == result["rows"]
