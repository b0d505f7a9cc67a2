"""Attribution cost: the gradient path against the encoder path, and the index at 1M samples.

On the same texts (ordinary chat data with planted harmful and chain-of-thought samples, from
the demo data packages) it prints:

1. the cost of attributing M queries against an N-sample pool by (a) the gradient path
   (``collect`` the queries ``--like`` the pool's bf16 gradient store, then ``score``) and
   (b) the encoder path (encode the queries, search the index), each end to end (models
   loaded inside the timing, as a CLI call does) and once loaded; the pool preparation cost
   of each; and the bytes each stores per pool sample;
2. each encoder backend on the real MiniLM: texts per second and the Spearman correlation of
   its pairwise cosine scores with float32 PyTorch's (the fidelity bar is 0.99), and the same
   for a shorter ``max_seq_length``;
3. a synthetic pool of unit vectors (dim 384, clustered like real embeddings, rounded to
   float16 as the store keeps them): single-query latency once loaded and recall@10 against
   exact search, for the exact index and the approximate kinds;
4. the search stage of both paths at a realistic pool size (``--scale-n``, synthetic vectors
   of each path's own dimension and format), added to section 1's query-side cost: at scale
   the gradient path must read N sketched gradients per batch of queries.

Targets: (1) >= 50x faster than the gradient path in bf16, <= 768 index bytes per pool sample
in float16; (2) the default backend at Spearman >= 0.99; (3) one query against 1M vectors in
< 20 ms with recall@10 >= 0.95.

    python benchmarks/bench_attribution.py                       # N=64, M=8, 1M synthetic
    python benchmarks/bench_attribution.py --pool 1000 --queries 50 --hnsw-n 1000000
    python benchmarks/bench_attribution.py --skip-gradient --synthetic-n 200000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (sets offline env)
import numpy as np

ENCODER = "all-minilm-l6-v2"
DECODER = "smollm2-135m"
K = 10
SYNTHETIC_RANK = 32
SYNTHETIC_NOISE = 0.5


def _dir_bytes(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in Path(path).rglob(pattern) if p.is_file())


# ---------------------------------------------------------------------------------------------
# 1. gradient path vs encoder path


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def gradient_vs_encoder(
    pool, queries, work: Path, adapter_init: str, repeats: int = 3
) -> list[dict]:
    from influcoder.attribution.attributor import Attributor
    from influcoder.attribution.build import build_index
    from influcoder.groundtruth.collect import collect, compute_shard, token_budget
    from influcoder.groundtruth.decoder import load_decoder
    from influcoder.groundtruth.gradients import GradientComputer
    from influcoder.groundtruth.influence import score_stores
    from influcoder.groundtruth.settings import CollectArguments

    rows = []
    t = time.perf_counter()
    pool_store = collect(
        pool,
        work / "grad-pool",
        CollectArguments(model=DECODER, bf16=True, adapter_init=adapter_init),
        progress=False,
    )
    grad_prep = time.perf_counter() - t
    t = time.perf_counter()
    query_store = collect(queries, work / "grad-queries", like=work / "grad-pool", progress=False)
    score_stores(pool_store, query_store, k=K)
    grad_e2e = time.perf_counter() - t
    # Once loaded: the model and adapter already in memory, only the queries' gradients and
    # the scores are timed.
    from influcoder.groundtruth.lora import load_adapter
    from influcoder.groundtruth.tokenize import tokenize_samples

    model, tok, _ = load_decoder(DECODER)
    peft_model = load_adapter(model, work / "grad-pool" / "adapter")
    args = pool_store.manifest["provenance"]["arguments"]
    comp = GradientComputer(
        peft_model,
        target=pool_store.setup["gradient"]["target"],
        sketch_dim=args["sketch_dim"],
        sketch_seed=args["sketch_seed"],
        bf16=True,
        pad_token_id=tok.pad_token_id,
    )
    tokd = tokenize_samples(tok, queries, max_length=args["max_length"])
    pool_vectors = pool_store.vectors()

    def gradient_attribute():
        # collect's own batching, by its token budget
        q, _ = compute_shard(comp, token_budget(CollectArguments(**args)), tokd)
        np.argsort(-(pool_vectors @ q.T), axis=0)[:K]

    grad_loaded = _median_seconds(gradient_attribute, repeats)

    t = time.perf_counter()
    index = build_index(pool, work / "index", ENCODER, progress=False)
    enc_prep = time.perf_counter() - t
    t = time.perf_counter()
    attributor = Attributor.load(work / "index")
    attributor.attribute(queries, k=K)
    enc_e2e = time.perf_counter() - t
    enc_loaded = _median_seconds(lambda: attributor.attribute(queries, k=K), repeats)

    n, m = len(pool), len(queries)
    seg = work / "index" / "segments" / "00000"
    rows.append(
        {
            "path": "gradient (bf16)",
            "pool prep s": grad_prep,
            "attribute M s (e2e)": grad_e2e,
            "attribute M s (loaded)": grad_loaded,
            "ms/query (loaded)": 1000 * grad_loaded / m,
            "vector B/sample": _dir_bytes(work / "grad-pool" / "vectors") / n,
            "total B/sample": _dir_bytes(work / "grad-pool") / n,
        }
    )
    rows.append(
        {
            "path": f"encoder ({attributor.encoder.backend}, {index.kind})",
            "pool prep s": enc_prep,
            "attribute M s (e2e)": enc_e2e,
            "attribute M s (loaded)": enc_loaded,
            "ms/query (loaded)": 1000 * enc_loaded / m,
            "vector B/sample": _dir_bytes(seg / "vectors") / n,
            "total B/sample": _dir_bytes(work / "index") / n,
        }
    )
    return rows


def encoder_only(pool, queries, work: Path) -> list[dict]:
    """Section 1 without the gradient path (``--skip-gradient``)."""
    from influcoder.attribution.attributor import Attributor
    from influcoder.attribution.build import build_index

    t = time.perf_counter()
    index = build_index(pool, work / "index", ENCODER, progress=False)
    prep = time.perf_counter() - t
    attributor = Attributor.load(work / "index")
    attributor.attribute(queries[:1], k=K)
    t = time.perf_counter()
    attributor.attribute(queries, k=K)
    loaded = time.perf_counter() - t
    seg = work / "index" / "segments" / "00000"
    n = len(pool)
    return [
        {
            "path": f"encoder ({attributor.encoder.backend}, {index.kind})",
            "pool prep s": prep,
            "attribute M s (loaded)": loaded,
            "ms/query (loaded)": 1000 * loaded / len(queries),
            "vector B/sample": _dir_bytes(seg / "vectors") / n,
            "total B/sample": _dir_bytes(work / "index") / n,
        }
    ]


# ---------------------------------------------------------------------------------------------
# 2. encoder backends


def backends(texts: list[str], lengths: list[int | None], names: list[str]) -> list[dict]:
    from influcoder.encoders.backends import FastEncoder, resolve_backend
    from influcoder.errors import MissingPackageError
    from influcoder.metrics import spearman

    iu = np.triu_indices(len(texts), 1)
    ref = None
    rows = []
    for length in lengths:
        for name in names:
            try:
                enc = FastEncoder(ENCODER, backend=name, max_seq_length=length)
            except MissingPackageError as e:
                rows.append({"backend": name, "note": str(e).split(".")[0]})
                continue
            enc.encode(texts[:8])  # warm up (and export, for onnx)
            t = time.perf_counter()
            v = enc.encode(texts)
            secs = time.perf_counter() - t
            if ref is None:  # the first row: float32 torch at the encoder's own length
                ref = v
            scores = (v @ v.T)[iu]
            exact = (ref @ ref.T)[iu]
            rows.append(
                {
                    "backend": name + (" (auto)" if name == resolve_backend("auto") else ""),
                    "max_seq_length": enc.max_seq_length,
                    "texts/s": len(texts) / secs,
                    "spearman vs fp32": f"{spearman(exact, scores):.4f}",
                    "min cos to fp32": f"{float((v * ref).sum(1).min()):.4f}",
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------
# 3. synthetic vectors


def synthetic(n: int, n_queries: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors like sentence embeddings: a continuous rank-32 Gaussian (most of each
    vector's energy) plus isotropic noise, normalised and rounded to float16 as stored;
    queries from the same distribution. No clusters, so nothing makes the search easy."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((SYNTHETIC_RANK, dim), dtype=np.float32) / np.sqrt(SYNTHETIC_RANK)

    def draw(count):
        out = np.empty((count, dim), dtype=np.float32)
        for i in range(0, count, 100_000):
            m = min(100_000, count - i)
            x = rng.standard_normal((m, SYNTHETIC_RANK), dtype=np.float32) @ basis
            x += rng.standard_normal((m, dim), dtype=np.float32) * SYNTHETIC_NOISE / np.sqrt(dim)
            out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out.astype(np.float16).astype(np.float32)

    return draw(n), draw(n_queries)


def faiss_at_scale(
    n: int, hnsw_n: int, n_queries: int, dim: int, nprobe: int | None, ef_search: int | None
) -> list[dict]:
    import faiss

    from influcoder.attribution.index import faiss_params, new_faiss

    rows = []
    for kind, size in (("flat", n), ("ivf", n), ("hnsw", hnsw_n)):
        if size <= 0:
            continue
        x, q = synthetic(size, n_queries, dim)
        exact = faiss.IndexFlatIP(dim)
        exact.add(x)
        _, truth = exact.search(q, K)
        t = time.perf_counter()
        if kind == "flat":
            index, params = exact, {}
        else:
            params = faiss_params(kind, size)
            if kind == "ivf" and nprobe:
                params["nprobe"] = nprobe
            if kind == "hnsw" and ef_search:
                params["ef_search"] = ef_search
            index = new_faiss(kind, dim, params)
            if not index.is_trained:
                pick = np.random.default_rng(0).choice(
                    size, min(size, 64 * params["nlist"]), replace=False
                )
                index.train(x[np.sort(pick)])
            index.add(x)
            if kind == "ivf":
                index.nprobe = params["nprobe"]
            else:
                index.hnsw.efSearch = params["ef_search"]
        build = time.perf_counter() - t
        index.search(q[:1], K)
        lat, hits = [], []
        for i in range(n_queries):
            t = time.perf_counter()
            _, found = index.search(q[i : i + 1], K)
            lat.append(time.perf_counter() - t)
            hits.append(len(set(found[0]) & set(truth[i])) / K)
        with tempfile.TemporaryDirectory() as d:
            file = os.path.join(d, "f.index")
            faiss.write_index(index, file)
            faiss_bytes = os.path.getsize(file)
        rows.append(
            {
                "kind": kind,
                "n": size,
                "params": params,
                "build s": build,
                "median ms/query": 1000 * float(np.median(lat)),
                "p95 ms/query": 1000 * float(np.percentile(lat, 95)),
                "recall@10": float(np.mean(hits)),
                "store B/sample (fp16)": 2 * dim,
                "faiss.index B/sample": 0 if kind == "flat" else faiss_bytes / size,
            }
        )
        del x, exact, index
    return rows


# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# 4. the search stage at a realistic pool size


def search_at_scale(n: int, m: int, work: Path, repeats: int) -> list[dict]:
    """Time each path's search stage for M queries against N pool vectors of its own kind:
    ``score_stores`` over a gradient store (sketch dim, float16, collect's shard size) and the
    flat (exact) FAISS index the encoder path opens by default. The vectors are random (their
    values do not change the cost); the query-side costs come from section 1."""
    import faiss

    from influcoder.groundtruth.influence import score_stores
    from influcoder.groundtruth.settings import CollectArguments
    from influcoder.io.samples import Sample
    from influcoder.io.stores import StoreWriter

    cargs = CollectArguments()
    rng = np.random.default_rng(0)

    def store(path: Path, rows: int, dim: int):
        samples = [Sample(id=f"{path.name}{i}", prompt="p", response="r") for i in range(rows)]
        w = StoreWriter(
            path,
            kind="gradients",
            setup={"synthetic": True},
            samples=samples,
            dim=dim,
            dtype=cargs.dtype,
            shard_rows=cargs.shard_rows,
        )
        for k in w.missing_shards():
            a, b = w.shard_range(k)
            w.write_shard(k, rng.standard_normal((b - a, dim), dtype=np.float32))
        return w.finish()

    pool = store(work / "grad-pool", n, cargs.sketch_dim)
    queries = store(work / "grad-queries", m, cargs.sketch_dim)
    score_stores(pool, queries, k=K)  # page cache warm: the cheapest case for the gradient path
    grad = _median_seconds(lambda: score_stores(pool, queries, k=K), repeats)

    x = rng.standard_normal((n, 384), dtype=np.float32)
    faiss.normalize_L2(x)
    q = x[rng.choice(n, m, replace=False)].copy()
    index = faiss.IndexFlatIP(384)
    index.add(x)
    enc = _median_seconds(lambda: index.search(q, K), repeats)
    return [
        {
            "path": "gradient (score_stores)",
            "n": n,
            "search M s": grad,
            "ms/query": 1000 * grad / m,
            "pool GB": n * cargs.sketch_dim * 2 / 1e9,
        },
        {
            "path": "encoder (flat FAISS)",
            "n": n,
            "search M s": enc,
            "ms/query": 1000 * enc / m,
            "pool GB": n * 384 * 2 / 1e9,
        },
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=int, default=64, help="N: pool samples (real texts)")
    ap.add_argument("--queries", type=int, default=8, help="M: queries (real texts)")
    ap.add_argument(
        "--adapter-init",
        default="fresh",
        choices=["fresh", "warmup"],
        help="gradient path's adapter (warmup adds its cost to pool prep)",
    )
    ap.add_argument("--skip-gradient", action="store_true", help="encoder path only")
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="the 'loaded' timings are the median of this many runs, both paths",
    )
    ap.add_argument("--backend-texts", type=int, default=256, help="texts for section 2")
    ap.add_argument("--backends", default="torch,bf16,onnx,int8")
    ap.add_argument("--lengths", default="256,128", help="max_seq_length values, section 2")
    ap.add_argument("--synthetic-n", type=int, default=1_000_000, help="flat and ivf pool")
    ap.add_argument(
        "--hnsw-n",
        type=int,
        default=100_000,
        help="hnsw pool (its build is the slow one; 0 skips it)",
    )
    ap.add_argument("--synthetic-queries", type=int, default=200)
    ap.add_argument(
        "--nprobe",
        type=int,
        default=None,
        help="ivf lists searched (default: the index's own choice)",
    )
    ap.add_argument(
        "--ef-search",
        type=int,
        default=None,
        help="hnsw candidates (default: the index's own choice)",
    )
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument(
        "--scale-n",
        type=int,
        default=100_000,
        help="section 4: pool size for the search stage of both paths",
    )
    ap.add_argument("--skip", default="", help="comma list of sections to skip: 1,2,3,4")
    args = ap.parse_args()
    skip = set(args.skip.split(","))

    section1 = None
    if "1" not in skip or "2" not in skip:
        pool, queries = common.mixed_samples(args.pool, args.queries)
    if "1" not in skip:
        with tempfile.TemporaryDirectory() as d:
            if args.skip_gradient:
                rows = encoder_only(pool, queries, Path(d))
            else:
                rows = gradient_vs_encoder(pool, queries, Path(d), args.adapter_init, args.repeats)
        print(
            f"\n1. attributing M={args.queries} queries against N={args.pool} pool samples "
            f"(top {K})"
        )
        print(
            common.table(
                rows,
                [
                    "path",
                    "pool prep s",
                    "attribute M s (e2e)",
                    "attribute M s (loaded)",
                    "ms/query (loaded)",
                    "vector B/sample",
                    "total B/sample",
                ],
            )
        )
        if len(rows) == 2:
            g, e = rows
            e2e = g["attribute M s (e2e)"] / e["attribute M s (e2e)"]
            loaded = g["attribute M s (loaded)"] / e["attribute M s (loaded)"]
            print(
                f"encoder path: {e2e:.0f}x faster end to end, {loaded:.0f}x once loaded "
                f"(target >= 50x)"
            )
            section1 = {"gradient": g["ms/query (loaded)"], "encoder": e["ms/query (loaded)"]}
    if "2" not in skip:
        from influcoder.io.samples import encoder_text

        texts = [encoder_text(s) for s in (pool + queries)][: args.backend_texts]
        lengths = [int(x) for x in args.lengths.split(",")]
        rows = backends(texts, lengths, args.backends.split(","))
        print(
            f"\n2. encoder backends on {ENCODER}, {len(texts)} texts "
            f"(first row: the float32 reference)"
        )
        print(
            common.table(
                rows,
                [
                    "backend",
                    "max_seq_length",
                    "texts/s",
                    "spearman vs fp32",
                    "min cos to fp32",
                    "note",
                ],
            )
        )
    if "3" not in skip:
        rows = faiss_at_scale(
            args.synthetic_n,
            args.hnsw_n,
            args.synthetic_queries,
            args.dim,
            args.nprobe,
            args.ef_search,
        )
        print(
            f"\n3. synthetic unit vectors, dim {args.dim}, {args.synthetic_queries} single "
            f"queries (recall@10 against exact search)"
        )
        print(
            common.table(
                rows,
                [
                    "kind",
                    "n",
                    "params",
                    "build s",
                    "median ms/query",
                    "p95 ms/query",
                    "recall@10",
                    "store B/sample (fp16)",
                    "faiss.index B/sample",
                ],
            )
        )
    if "4" not in skip:
        with tempfile.TemporaryDirectory() as d:
            rows = search_at_scale(args.scale_n, args.queries, Path(d), args.repeats)
        print(
            f"\n4. the search stage for M={args.queries} queries against N={args.scale_n} "
            f"pool vectors (synthetic, each path's own size and format)"
        )
        print(common.table(rows, ["path", "n", "pool GB", "search M s", "ms/query"]))
        if section1:
            g = section1["gradient"] + rows[0]["ms/query"]
            e = section1["encoder"] + rows[1]["ms/query"]
            print(
                f"per query at N={args.scale_n}, once loaded (section 1's query side + this "
                f"search): gradient {g:.0f} ms, encoder {e:.1f} ms: {g / e:.0f}x"
            )
    print(f"\nreproduce: {common.command_line()}")


if __name__ == "__main__":
    main()
