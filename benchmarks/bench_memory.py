"""Peak resident memory and time of `influcoder collect` against the pool's size.

Runs the real CLI in a fresh process per size on the first N Big-Bench-Hard chain-of-thought
exemplars (deepeval's, median ~290 SmolLM2 tokens, up to 512) with the bundled SmolLM2-135M and
default settings, except the warm-up's length: every warm-up step is a batch of the same size,
so its memory does not depend on how many steps there are, only its time does (--warmup-steps,
default 2 here; the default of collect is 24). The peak is the child's ru_maxrss (os.wait4).
Pass --src to measure another checkout's code (e.g. the release before token budgets).

    OMP_NUM_THREADS=1 python benchmarks/bench_memory.py --sizes 24,48
    OMP_NUM_THREADS=1 python benchmarks/bench_memory.py --sizes 24,48 --src ../old-checkout/src
    OMP_NUM_THREADS=1 python benchmarks/bench_memory.py --sizes 24 -- --batch-tokens 4096
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common


def _available_gib() -> float:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) / 2**20


def run_collect(
    n: int, src: str | None, warmup_steps: int, extra: list[str], min_free_gib: float = 1.5
) -> dict:
    from influcoder.workflows.datasets import load_bbh_cot

    rows = load_bbh_cot()[:n]
    if len(rows) < n:
        raise SystemExit(f"only {len(rows)} samples available")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp, "data.jsonl")
        data.write_text(
            "".join(
                json.dumps({"id": r["id"], "prompt": r["prompt"], "response": r["response"]}) + "\n"
                for r in rows
            )
        )
        env = dict(os.environ)
        if src:
            env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
        cmd = [
            sys.executable,
            "-m",
            "influcoder.cli",
            "collect",
            str(data),
            "-o",
            str(Path(tmp, "store")),
            "--warmup-steps",
            str(warmup_steps),
            "--quiet",
            *extra,
        ]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while True:  # a shared machine: stop the run rather than let it exhaust the memory
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if _available_gib() < min_free_gib:
                proc.kill()
                proc.wait()
                raise SystemExit(f"stopped: the machine had under {min_free_gib} GiB free")
            time.sleep(0.1)
        wall = time.perf_counter() - start
        if status != 0:
            raise SystemExit(f"collect failed: {proc.stderr.read().decode()[-2000:]}")
        proc.stderr.close()
        manifest = json.loads(Path(tmp, "store", "manifest.json").read_text())
    return {
        "samples": n,
        "peak RSS GiB": usage.ru_maxrss / 2**20,
        "wall s": wall,
        "CPU s": usage.ru_utime + usage.ru_stime,
        "sys s": usage.ru_stime,
        "gradients s/sample": manifest["provenance"]["seconds"] / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="24,48", help="pool sizes, comma-separated")
    ap.add_argument("--src", default=None, help="the influcoder source folder to run")
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument(
        "--min-free-gib",
        type=float,
        default=1.5,
        help="stop a run when the machine has less memory available",
    )
    ap.add_argument("extra", nargs="*", help="more collect options (after --)")
    args = ap.parse_args()
    rows = [
        run_collect(int(n), args.src, args.warmup_steps, args.extra, args.min_free_gib)
        for n in args.sizes.split(",")
    ]
    print(
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"code: {args.src or 'this checkout'}"
    )
    print(
        common.table(
            rows, ["samples", "peak RSS GiB", "wall s", "CPU s", "sys s", "gradients s/sample"]
        )
    )
    print(f"\nreproduce: {common.command_line()}")


if __name__ == "__main__":
    main()
