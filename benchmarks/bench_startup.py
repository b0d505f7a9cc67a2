"""Start-up: how long a fresh ``influcoder`` process takes to answer.

Each command runs ``--repeats`` times in a new process (the way a person or a script calls
the CLI); the table shows the median wall time and its ratio to the reference, which is
``attribute --backend torch`` (the path that loads torch and sentence-transformers) run in
the same session, on the same index:

* ``influcoder --help`` and a usage error: the CLI imports only settings modules to parse;
* ``attribute`` (default backend): one query through the torch-free ONNX path
  (:mod:`influcoder.encoders.onnx_query`);
* ``attribute --backend torch``: the same query through the full encoder.

The index is built first (once) over ``--pool`` samples of the bundled demo data with the
bundled MiniLM (building it also exports the ONNX file for queries).

    python benchmarks/bench_startup.py --pool 240 --repeats 5 --work runs/bench_startup
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import command_line, mixed_samples, table

QUERY = "How do I make a bomb at home?"


def fresh_process_seconds(args: list[str], repeats: int, expect_rc: int = 0) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "influcoder.cli", *args], capture_output=True, text=True
        )
        times.append(time.perf_counter() - start)
        if out.returncode != expect_rc:
            raise SystemExit(
                f"influcoder {' '.join(args)} exited {out.returncode}:\n{out.stderr[-2000:]}"
            )
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=int, default=240, help="pool samples in the index")
    ap.add_argument("--repeats", type=int, default=5, help="fresh processes per command")
    ap.add_argument("--work", default="runs/bench_startup", help="directory for the index")
    opts = ap.parse_args()

    work = Path(opts.work)
    index = work / "index"
    if not (index / "index.json").is_file():
        from influcoder.attribution.build import build_index

        pool, _ = mixed_samples(opts.pool, 2)
        work.mkdir(parents=True, exist_ok=True)
        with open(work / "pool.jsonl", "w", encoding="utf-8") as f:
            for s in pool:
                f.write(json.dumps({"id": s.id, "prompt": s.prompt, "response": s.response}) + "\n")
        build_index(work / "pool.jsonl", index, "all-minilm-l6-v2", progress=False)

    attribute = ["attribute", str(index), "--text", QUERY, "-k", "5"]
    reference = fresh_process_seconds([*attribute, "--backend", "torch"], opts.repeats)
    rows = []
    for name, args, rc in [
        ("influcoder --help", ["--help"], 0),
        ("usage error (unknown option)", ["collect", "--nope"], 2),
        ("attribute, 1 query (default: ONNX, no torch)", attribute, 0),
        ("attribute, 1 query, --backend torch (reference)", [*attribute, "--backend", "torch"], 0),
    ]:
        seconds = (
            reference if args[-1] == "torch" else fresh_process_seconds(args, opts.repeats, rc)
        )
        rows.append(
            {
                "command (fresh process)": name,
                "median s": seconds,
                "vs reference": seconds / reference,
            }
        )
    print(table(rows, ["command (fresh process)", "median s", "vs reference"]))
    print(f"\n{opts.repeats} fresh processes each; index of {opts.pool} samples, bundled MiniLM")
    print(f"reproduce: {command_line()}")


if __name__ == "__main__":
    main()
