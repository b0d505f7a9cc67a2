"""``influcoder serve`` under load: a bounded number of concurrent clients against a real
server on loopback, one query per request, against a 100,000-sample index.

It prints errors, latency percentiles (p50/p90/p99/max) and requests per second, once for one
client alone (the unloaded latency) and once for the full load, and how the server's time
splits (from its ``Server-Timing`` header): waiting for a batch (queue), the encoder, the
exact scoring of the pool with top-k, percentiles and histogram (search), and the rest
(HTTP, JSON, validation); the client's time beyond the server's total is the loopback and
client overhead.

The index: encoding 100,000 texts with MiniLM takes 10+ minutes on 2 cores, so its *vectors*
are synthetic: the 897 ChatterBot samples (from the installed demo data package) are encoded
for real by the bundled encoder, and pool sample ``i`` is sample ``i mod 897`` (its text with
`` [i]`` appended, its category as metadata) with the unit vector of its real embedding plus
Gaussian noise (cosine to it about 0.75). The index is otherwise built by ``build_index`` as
usual (the encoder's ``encode`` is swapped for a look-up while it runs). Queries are real
texts encoded by the real encoder inside the server, as in production.

Target: 0 errors, p99 < 100 ms with 32 concurrent clients on a 2-core machine.

    OMP_NUM_THREADS=1 python benchmarks/bench_serve.py                  # 100k, 32 x 2000
    python benchmarks/bench_serve.py --n 20000 --clients 8 --requests 500
    python benchmarks/bench_serve.py --work runs/bench-serve            # keep the index
    python benchmarks/bench_serve.py --backend int8                     # quantised queries
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (sets offline env)
import numpy as np

ENCODER = "all-minilm-l6-v2"
NOISE = 0.9  # norm of the noise added to a unit embedding: cosine about 1 / sqrt(1 + 0.81)


def build_synthetic_index(out: Path, n: int, seed: int = 0) -> None:
    """A real index of ``n`` samples whose vectors are real embeddings plus noise (see the
    module docstring)."""
    from influcoder.attribution import backends
    from influcoder.attribution.build import build_index
    from influcoder.io.samples import Sample, encoder_text
    from influcoder.workflows.datasets import load_chatterbot

    base = load_chatterbot()
    encoder = backends.FastEncoder(ENCODER, backend="torch")
    real = encoder.encode([encoder_text(Sample(r["id"], r["prompt"], r["response"])) for r in base])
    rng = np.random.default_rng(seed)
    samples, vectors = [], np.empty((n, real.shape[1]), dtype=np.float32)
    for i in range(n):
        b = base[i % len(base)]
        samples.append(
            Sample(
                f"s{i}",
                b["prompt"],
                f"{b['response']} [{i}]",
                meta={"category": b["category"], "part": f"part-{i % 4}"},
            )
        )
    for start in range(0, n, 10_000):
        stop = min(n, start + 10_000)
        noise = rng.standard_normal((stop - start, real.shape[1])).astype(np.float32)
        noise *= NOISE / np.linalg.norm(noise, axis=1, keepdims=True)
        v = real[np.arange(start, stop) % len(base)] + noise
        vectors[start:stop] = v / np.linalg.norm(v, axis=1, keepdims=True)
    row_of = {encoder_text(s): i for i, s in enumerate(samples)}
    encode = backends.FastEncoder.encode

    def look_up(self, texts):
        texts = list(texts)
        if all(t in row_of for t in texts):
            return vectors[[row_of[t] for t in texts]]
        return encode(self, texts)

    backends.FastEncoder.encode = look_up
    try:
        build_index(samples, out, ENCODER, backend="torch", progress=False)
    finally:
        backends.FastEncoder.encode = encode


def query_bodies(count: int, k: int, seed: int = 1) -> list[bytes]:
    """Request bodies of real texts: ChatterBot responses and prompts, one query each."""
    from influcoder.workflows.datasets import load_chatterbot

    base = load_chatterbot()
    rng = np.random.default_rng(seed)
    out = []
    for j in rng.choice(len(base), size=count, replace=count > len(base)):
        b = base[int(j)]
        out.append(
            json.dumps({"prompt": b["prompt"], "response": b["response"], "k": k}).encode("utf-8")
        )
    return out


def start_server(index: Path, port: int, backend: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "influcoder.cli",
            "serve",
            str(index),
            "--port",
            str(port),
            "--backend",
            backend,
        ],
        env=env,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if b" 200 " in s.recv(200):
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("the server exited")
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("the server did not start in 300 s")


async def _client(port: int, bodies: list[bytes], next_index, results: list) -> None:
    """One keep-alive HTTP/1.1 connection sending requests until they run out. A minimal
    client on purpose: on 2 cores, the load generator's own CPU time competes with the
    server's."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (i := next_index()) is not None:
            body = bodies[i % len(bodies)]
            head = (
                f"POST /api/attribute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                f"application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            t = time.perf_counter()
            try:
                writer.write(head + body)
                await writer.drain()
                status = int((await reader.readline()).split()[1])
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                payload = await reader.readexactly(int(headers.get("content-length", 0)))
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as e:
                results.append((time.perf_counter() - t, None, repr(e), None))
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            latency = time.perf_counter() - t
            timing = {
                p.split(";dur=")[0]: float(p.split(";dur=")[1])
                for p in headers.get("server-timing", "").split(", ")
                if ";dur=" in p
            }
            batch = json.loads(payload)["timing_ms"]["batch"] if status == 200 else None
            results.append((latency, status, timing, batch))
    finally:
        writer.close()


def run_load(port: int, bodies: list[bytes], clients: int, requests: int) -> dict:
    counter = iter(range(requests))
    results: list = []
    next_index = lambda: next(counter, None)  # noqa: E731

    async def main():
        await asyncio.gather(*(_client(port, bodies, next_index, results) for _ in range(clients)))

    t = time.perf_counter()
    asyncio.run(main())
    wall = time.perf_counter() - t
    ok = [r for r in results if r[1] == 200]
    lat = np.array([r[0] for r in results]) * 1e3
    parts = {
        p: float(np.mean([r[2].get(p, 0.0) for r in ok]))
        for p in ("queue", "encode", "search", "rest", "total")
    }
    parts["client+network"] = float(np.mean([r[0] * 1e3 - r[2]["total"] for r in ok]))
    return {
        "clients": clients,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "p50_ms": float(np.percentile(lat, 50)),
        "p90_ms": float(np.percentile(lat, 90)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
        "req_per_s": len(results) / wall,
        "mean_batch": float(np.mean([r[3] for r in ok])),
        "split_ms": parts,
    }


def report(name: str, r: dict) -> None:
    print(f"\n{name}: {r['clients']} client(s), {r['requests']} requests, {r['errors']} errors")
    print(
        f"  latency  p50 {r['p50_ms']:.1f} ms   p90 {r['p90_ms']:.1f} ms   "
        f"p99 {r['p99_ms']:.1f} ms   max {r['max_ms']:.1f} ms"
    )
    print(f"  throughput {r['req_per_s']:.0f} requests/s, mean batch {r['mean_batch']:.1f} queries")
    s = r["split_ms"]
    print("  time per request (mean ms): " + ", ".join(f"{k} {v:.1f}" for k, v in s.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="pool samples")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--backend",
        default="auto",
        help="the server's query encoder (auto: float32 ONNX; int8: quantised)",
    )
    ap.add_argument("--work", default=None, help="keep the index here (reused if present)")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-serve-"))
    index = work / f"index-{args.n}"
    if not (index / "index.json").is_file():
        t = time.perf_counter()
        build_synthetic_index(index, args.n)
        print(
            f"built {index} ({args.n} samples, synthetic vectors) in "
            f"{time.perf_counter() - t:.0f} s"
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.perf_counter()
    server = start_server(index, port, args.backend)
    print(
        f"server up in {time.perf_counter() - t:.1f} s (backend {args.backend}, cores: "
        f"{os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')})"
    )
    try:
        bodies = query_bodies(500, args.k)
        run_load(port, bodies, 4, 100)  # warm-up
        report("one client", run_load(port, bodies, 1, 200))
        loaded = run_load(port, bodies, args.clients, args.requests)
        report("load", loaded)
        print(f"load average after: {os.getloadavg()[0]:.1f} (other jobs share the cores)")
        target = loaded["errors"] == 0 and loaded["p99_ms"] < 100
        print(f"\ntarget (0 errors, p99 < 100 ms): {'met' if target else 'NOT met'}")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
