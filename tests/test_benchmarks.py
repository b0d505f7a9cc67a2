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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--quick",
                           "--model", str(tiny_model_dir), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["device"]
    collect, encode = ([r for r in result["rows"] if r["step"] == step]
                       for step in ("collect", "encode"))
    assert len(collect) == 1 and collect[0]["n"] == 4 and collect[0]["ms/sample"] > 0
    assert collect[0]["precision"] in ("float32", "bf16-autocast")
    assert len(encode) == 1 and encode[0]["n"] == 64 and encode[0]["texts/s"] > 0
    assert isinstance(collect[0]["met"], bool) and isinstance(encode[0]["met"], bool)
    assert "ms/sample" in done.stdout and "texts/s" in done.stdout
