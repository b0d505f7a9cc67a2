"""The peers benchmark runs end to end (``--quick``: influcoder and the plain loop only, a tiny
model), so the script cannot rot; the peers themselves live in their own environment and are
never needed here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _bench(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_bench_peers_quick_runs_end_to_end(tiny_model_dir, tmp_path):
    """--quick on a tiny model, plus a peer whose import fails (a module of its name that
    raises stands in for a broken install): its row carries the error, the others go on."""
    fake = tmp_path / "fake"
    (fake / "kronfluence").mkdir(parents=True)
    (fake / "kronfluence" / "__init__.py").write_text(
        "raise ImportError('kronfluence is broken here on purpose')\n"
    )
    out = tmp_path / "peers.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(fake), str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
        ),
    }
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_peers.py"),
            "--quick",
            "--model",
            str(tiny_model_dir),
            "--out",
            str(out),
            "--methods",
            "collect,kronfluence,collect-dense,plain",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["plan"]["n"] == 4 and result["plan"]["threads"] == 1
    rows = {r["method"]: r for r in result["rows"]}
    # the plain loop runs first whatever the order given: it is the reference
    assert list(rows) == ["plain", "collect", "kronfluence", "collect-dense"]
    assert "broken here on purpose" in rows["kronfluence"]["error"]
    assert "FAILED" in done.stdout and "broken here on purpose" in done.stdout
    for name in ("plain", "collect", "collect-dense"):
        r = rows[name]
        assert r["error"] is None, r["error"]
        assert r["passes"] == 4 and r["pairs"] == 6
        assert r["s/sample"] > 0 and r["CPU s/sample"] > 0 and r["peak RSS GiB"] > 0
        assert r["speed-up vs plain"] > 0 and -1 <= r["spearman vs plain"] <= 1
    assert rows["plain"]["speed-up vs plain"] == 1 and rows["plain"]["spearman vs plain"] == 1
    # the fast path without a sketch ranks the pairs as the plain loop does: the same gradients
    assert rows["collect-dense"]["spearman vs plain"] >= 0.99
    # no peer ran, so no target can be judged
    assert result["targets"] == []
    assert "spearman vs plain" in done.stdout and "reproduce:" in done.stdout


def test_cosines_of_a_gram_matrix_match_cosines_of_the_rows():
    """Kronfluence gives dot products; normalising by the diagonal gives the rows' cosines."""
    methods = _bench("peer_methods")
    rows = np.random.default_rng(0).standard_normal((5, 7))
    np.testing.assert_allclose(
        methods.cosines_of_gram(rows @ rows.T), methods.cosines_of(rows), atol=1e-12
    )
    assert np.allclose(np.diag(methods.cosines_of(rows)), 1)


def test_targets_compare_each_collect_row_with_the_fastest_peer():
    bench = _bench("bench_peers")
    rows = [
        {
            "method": "plain",
            "peer": False,
            "error": None,
            "s/sample": 2.0,
            "peak RSS GiB": 2.0,
            "spearman vs plain": 1.0,
        },
        {
            "method": "collect",
            "peer": False,
            "error": None,
            "s/sample": 0.5,
            "peak RSS GiB": 1.5,
            "spearman vs plain": 0.98,
        },
        {
            "method": "kronfluence",
            "peer": True,
            "error": None,
            "s/sample": 1.5,
            "peak RSS GiB": 4.0,
            "spearman vs plain": 1.0,
        },
        {
            "method": "bergson",
            "peer": True,
            "error": None,
            "s/sample": 1.2,
            "peak RSS GiB": 1.4,
            "spearman vs plain": 1.0,
        },
        {"method": "collect-bf16", "peer": False, "error": "it broke"},
    ]
    (t,) = bench.targets(rows)
    assert t["method"] == "collect" and t["fastest peer"] == "bergson"
    assert abs(t["x faster than it"] - 2.4) < 1e-9 and t["speed met"] is True
    assert t["spearman met"] is False and t["RSS below every peer"] is False
    assert bench.targets(rows[:2]) == []  # no peer ran: nothing to judge


def test_bf16_error_reads_a_peer_run(tiny_model_dir, tmp_path):
    """bf16_error.py on a --quick peer run's work directory: a row per variant, float32 LM head
    and all, and bf16 autocast moves the gradients (its per-sample cosines are not all 1)."""
    work = tmp_path / "work"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
        ),
    }
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_peers.py"),
            "--quick",
            "--model",
            str(tiny_model_dir),
            "--methods",
            "plain",
            "--work",
            str(work),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _bench("bf16_error").main(
        ["--work", str(work), "--model", str(tiny_model_dir), "--short", "4", "--long", "4"]
    )
    by_name = {r["variant"]: r for r in rows}
    assert list(by_name) == [
        "float32 (reference)",
        "bf16",
        "bf16, LM head fp32",
        "bf16, attention fp32",
        "bf16, MLP fp32",
    ]
    cosines = np.array(by_name["bf16"]["cosines"])
    assert len(cosines) == 4 and (cosines > 0.9).all() and (cosines < 1 - 1e-6).any()
