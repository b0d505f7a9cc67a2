"""How sharp is LDS for how many training runs? The trade-off, from one run store.

From the LDS subset runs saved in one run store (``influcoder validate --lds-subsets M``,
``OUT/runs``), every method's LDS and its 95% bootstrap interval (subsets and queries
resampled, as validate computes it) are recomputed on random draws of ``c`` of the ``M``
subset runs, for each ``c`` of ``--counts``; the table gives, per method and ``c``, the mean
LDS, its spread over the draws, and the mean interval half-width, overall and per query kind
(``--by``). Beside it: the runs' subset size, optimiser steps and measured wall and CPU time
per run (from the run files), so ``c`` runs' cost reads off the table. Run it on stores of
other subset sizes or steps (``--lds-fraction``, ``--epochs``) to compare those too.

    python benchmarks/lds_tradeoff.py runs/demo/validate/runs runs/demo/grad_pool \\
        runs/demo/grad_test_queries -e distilled=runs/demo/encoder \\
        -e untrained=all-minilm-l6-v2 --by label --counts 8,16,32,64

No retraining: seconds to minutes (the bootstrap), one thread.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", help="the run store (OUT/runs of influcoder validate)")
    p.add_argument("pool", help="the pool's gradient store the runs trained on")
    p.add_argument("queries", help="the held-out query store of the validation")
    p.add_argument("-e", "--encoder", action="append", default=[], metavar="NAME=ENCODER")
    p.add_argument(
        "-m",
        "--method",
        action="append",
        default=[],
        metavar="NAME=POOL,QUERIES",
        help="a method from two stores of precomputed vectors",
    )
    p.add_argument("--baselines", default="bm25,random")
    p.add_argument("--by", default=None, help="query field for per-kind half-widths")
    p.add_argument(
        "--counts",
        default=None,
        help="numbers of subset runs to draw, comma separated [default: 8, 16, "
        "32, ... up to all saved]",
    )
    p.add_argument("--draws", type=int, default=10, help="random draws per count")
    p.add_argument("--n-boot", type=int, default=500)
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the draws, the bootstrap and the random baseline",
    )
    p.add_argument("--lds-fraction", type=float, default=None)
    p.add_argument("--lds-seed", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the table here")
    return p.parse_args(argv)


def named(values, option):
    out = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep:
            sys.exit(f"{option}: expected NAME=VALUE, got {value!r}")
        out[name] = rest
    return out


def run_costs(saved, subsets) -> dict:
    """Subset size, optimiser steps, wall and CPU seconds per LDS run (means over runs)."""
    training = saved.manifest["training"]
    records = [saved.read_file(p) for p in saved.files()]
    lds_records = [r for r in records if "lds" in r]
    size = float(np.mean([len(s) for s in subsets]))
    steps = max(1, math.ceil(training["epochs"] * math.ceil(size / training["batch_size"])))
    cpu = [r["cpu_seconds"] for r in lds_records if r.get("cpu_seconds") is not None]
    return {
        "subset_size": size,
        "steps": steps,
        "epochs": training["epochs"],
        "lr": training["lr"],
        "start": training.get("start", "fresh"),
        "wall_s": float(np.mean([r["seconds"] for r in lds_records])),
        "cpu_s": float(np.mean(cpu)) if cpu else float("nan"),
    }


def main(argv=None) -> None:
    from influcoder.io.tables import format_table
    from influcoder.validation.effects import lds, lds_by_kind
    from influcoder.validation.saved import (
        HELDOUT,
        measured_losses,
        measured_queries,
        query_columns,
    )
    from influcoder.workflows.validation import saved_scores

    args = parse_args(argv)
    stores = {k: tuple(v.split(",")) for k, v in named(args.method, "--method").items()}
    baselines = [] if args.baselines == "none" else args.baselines.split(",")
    saved, scores, queries = saved_scores(
        args.runs,
        args.pool,
        args.queries,
        encoders=named(args.encoder, "--encoder"),
        baselines=baselines,
        stores=stores,
        seed=args.seed,
        device=args.device,
    )
    subsets, losses = saved.lds_runs(fraction=args.lds_fraction, seed=args.lds_seed)
    total = len(subsets)
    counts = (
        [int(c) for c in args.counts.split(",")]
        if args.counts
        else sorted({c for c in (8, 16, 32, 64, 128, 256) if c < total} | {total})
    )
    if any(c < 2 or c > total for c in counts):
        sys.exit(f"--counts must lie in [2, {total}] (the subset runs saved)")
    heldout = query_columns(saved, queries, HELDOUT)
    if args.by:
        cols, parts = measured_queries(saved, queries)
        kinds = [str(queries[c].meta.get(args.by)) for c in cols]
        measured = measured_losses(losses, parts)
    costs = run_costs(saved, subsets)
    rng = np.random.default_rng(args.seed)
    table, start = [], time.perf_counter()
    for c in counts:
        draws = [
            np.sort(rng.choice(total, size=c, replace=False))
            for _ in range(1 if c == total else args.draws)
        ]
        for method, s in scores.items():
            found, widths, kind_widths = [], [], {}
            for idx in draws:
                picked = [subsets[i] for i in idx]
                score = lds(
                    s[:, heldout], picked, losses[HELDOUT][idx], n_boot=args.n_boot, seed=args.seed
                )
                found.append(score["lds"])
                widths.append((score["high"] - score["low"]) / 2)
                if args.by:
                    by_kind = lds_by_kind(
                        s[:, cols], picked, measured[idx], kinds, n_boot=args.n_boot, seed=args.seed
                    )
                    for kind, v in by_kind.items():
                        kind_widths.setdefault(kind, []).append((v["high"] - v["low"]) / 2)
            row = {
                "subsets": c,
                "method": method,
                "lds": float(np.mean(found)),
                "lds_sd_over_draws": float(np.std(found)),
                "half_width": float(np.mean(widths)),
            }
            row.update({f"half_width_{k}": float(np.mean(v)) for k, v in kind_widths.items()})
            row["cpu_h_for_runs"] = c * costs["cpu_s"] / 3600
            table.append(row)
    print(
        f"{saved.path}: {total} subset runs of {costs['subset_size']:.0f} pool samples, "
        f"{costs['steps']} steps each ({costs['epochs']} epochs, lr {costs['lr']}, "
        f"start {costs['start']}); {costs['wall_s']:.1f} s wall, {costs['cpu_s']:.1f} s CPU "
        f"a run; {len(heldout)} held-out queries; {args.draws} draws a count"
    )
    print(format_table(table))
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"costs": costs, "rows": table, "total_subsets": total}, f, indent=1)


if __name__ == "__main__":
    main()
