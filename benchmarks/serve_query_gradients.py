"""``serve`` with and without ``--query-gradients``: the server's start (until /api/health
answers) and each /api/attribute's wall time, the queries one after another, on a real
server over loopback.

    OMP_NUM_THREADS=2 python benchmarks/serve_query_gradients.py runs/demo/index_qg \\
        runs/demo/grad_pool runs/demo/data/test_queries.jsonl --count 12

The first request of each server is reported apart (it may warm caches).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("index", help="an index directory")
    p.add_argument("store", help="the gradient store the index's encoder was distilled from")
    p.add_argument("queries", help="a .jsonl file of prompt/response queries")
    p.add_argument("--count", type=int, default=12, help="the first COUNT queries")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--port", type=int, default=8765)
    return p.parse_args(argv)


def bench(args, extra: list[str]) -> dict:
    import httpx

    rows = [json.loads(line) for line in Path(args.queries).read_text().splitlines()][: args.count]
    binary = str(Path(sys.executable).with_name("influcoder"))
    command = [binary, "serve", args.index, "--port", str(args.port), "--device", "cpu", *extra]
    start = time.perf_counter()
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=300)
        while True:
            try:
                if client.get("/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                if server.poll() is not None:
                    raise SystemExit(f"the server stopped: {' '.join(command)}") from None
            time.sleep(0.2)
        started = time.perf_counter() - start
        seconds = []
        for row in rows:
            body = {"prompt": row.get("prompt", ""), "response": row["response"], "k": args.k}
            t = time.perf_counter()
            r = client.post("/api/attribute", json=body)
            r.raise_for_status()
            seconds.append(time.perf_counter() - t)
        backend = client.get("/api/info").json()["query_gradients"] or "encoder"
    finally:
        server.terminate()
        server.wait()
    rest = seconds[1:] or seconds
    return {
        "mode": backend,
        "start_s": round(started, 2),
        "first_s": round(seconds[0], 3),
        "median_s": round(statistics.median(rest), 3),
        "max_s": round(max(rest), 3),
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    for extra in ([], ["--query-gradients", args.store]):
        print(json.dumps(bench(args, extra)), flush=True)


if __name__ == "__main__":
    main()
