"""``select`` and ``attribute --group-by`` at a realistic pool size, on synthetic vectors.

1. ``select_rows`` (the FAISS path: search, widened until provably exact; for ``max`` also
   the scan it uses on a flat index) against a numpy
   brute force over the whole score matrix (one matrix product, then the aggregate and a
   partial sort): time of each and whether they choose the same rows, for each rule, a few
   target counts and budgets. The pool is the synthetic unit vectors of
   ``bench_attribution.py`` (float16-rounded, no clusters) in an exact (flat) FAISS index,
   behind the two methods ``select_rows`` uses (``search``, ``rows``); the targets are pool
   vectors plus noise (a target resembles some training data).
   "same order" can fail where two rows' scores are equal in float32 but not in float64: FAISS
   and numpy round differently, and the tie goes to the lower row.
2. ``group_stats`` (the per-group mean, sum, max and softmax of every pool score) for a batch
   of queries.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_select.py               # n = 200,000
    OMP_NUM_THREADS=1 python benchmarks/bench_select.py --n 50000 --repeats 1
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
from bench_attribution import synthetic

from influcoder.attribution.groups import group_stats
from influcoder.attribution.select import select_rows


class FlatPool:
    """Unit vectors in an exact FAISS index, with the part of :class:`Index` that
    :func:`select_rows` uses."""

    kind = "flat"

    def __init__(self, x: np.ndarray):
        import faiss

        self.x = x
        self.n, self.dim = x.shape
        self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(x)

    def search(self, q, k):
        scores, rows = self.index.search(np.ascontiguousarray(q, dtype=np.float32), k)
        scores[rows < 0] = -np.inf
        return scores, rows

    def rows(self, rows):
        return self.x[np.asarray(rows)]

    def iter_chunks(self):
        for start in range(0, self.n, 65536):
            yield start, self.x[start : start + 65536]


def brute_force(x: np.ndarray, q: np.ndarray, count: int, how: str) -> np.ndarray:
    """The chosen rows from the whole score matrix (numpy; the spread loop is the same round
    robin as the reference, over full per-target orders)."""
    s = x @ q.T
    if how == "spread":
        orders = np.argsort(-s, axis=0, kind="stable").T
        taken = np.zeros(len(x), dtype=bool)
        ptr = np.zeros(len(q), dtype=np.int64)
        out = []
        while len(out) < count:
            for j in range(len(q)):
                if len(out) == count:
                    break
                while taken[orders[j, ptr[j]]]:
                    ptr[j] += 1
                taken[orders[j, ptr[j]]] = True
                out.append(orders[j, ptr[j]])
        return np.array(out)
    agg = s.max(axis=1) if how == "max" else s.mean(axis=1)
    top = np.argpartition(-agg, count - 1)[:count]
    return top[np.lexsort((top, -agg[top]))]


def table(rows: list[dict]) -> str:
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()] for r in rows]
    head = list(rows[0])
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    return "\n".join("  ".join(x.rjust(w) for x, w in zip(line, widths)) for line in [head, *cells])


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="pool vectors")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--targets", default="10,30,100", help="target counts, comma-separated")
    ap.add_argument("--fractions", default="0.01,0.05", help="budgets, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    x, _ = synthetic(args.n, 1, args.dim)
    pool = FlatPool(x)
    rng = np.random.default_rng(1)
    rows = []
    for n_targets in (int(t) for t in args.targets.split(",")):
        q = x[rng.choice(args.n, n_targets, replace=False)]
        q = q + 0.5 * rng.standard_normal(q.shape).astype(np.float32) / np.sqrt(args.dim)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        for fraction in (float(f) for f in args.fractions.split(",")):
            count = int(np.ceil(fraction * args.n))
            for rule in ("max, search", "max, scan", "mean", "spread"):
                how = rule.split(",")[0]
                fast_s, sel = median_seconds(
                    partial(
                        select_rows,
                        pool,
                        q,
                        count,
                        how="max" if how == "spread" else how,
                        spread=how == "spread",
                        scan=rule == "max, scan",
                    ),
                    args.repeats,
                )
                brute_s, ref = median_seconds(partial(brute_force, x, q, count, how), args.repeats)
                rows.append(
                    {
                        "rule": rule,
                        "targets": n_targets,
                        "budget": count,
                        "select_rows s": fast_s,
                        "final k": sel.k or "-",
                        "brute force s": brute_s,
                        "same set": bool(set(sel.rows.tolist()) == set(ref.tolist())),
                        "same order": bool(np.array_equal(sel.rows, ref)),
                    }
                )
    print(
        f"1. select_rows against a numpy brute force, n = {args.n:,} x {args.dim} "
        f"(flat), median of {args.repeats}"
    )
    print(table(rows))

    codes = rng.integers(0, 50, size=args.n)
    print(f"\n2. group_stats over {args.n:,} scores per query, 50 groups, median of {args.repeats}")
    for n_queries in (1, 16):
        scores = (x @ x[:n_queries].T).T
        t, _ = median_seconds(partial(group_stats, scores, codes, 50), args.repeats)
        print(f"  {n_queries} queries: {t * 1e3:.1f} ms ({t * 1e3 / n_queries:.1f} ms/query)")


if __name__ == "__main__":
    main()
