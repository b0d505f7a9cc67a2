"""How many retraining runs does learning from them take? Held-out LDS against training runs.

A run store (``influcoder validate --lds-subsets M``) is split once, with a seed, into
training and held-out runs and training and held-out queries. For each number k of training
runs (a prefix of one seeded order, so each k's runs include the smaller k's), two encoders
learn from the k runs on the training queries (AirRep's objective, ``influcoder
distill-runs``): one from the untrained encoder (``--base``, AirRep alone), one from the
gradient-distilled encoder (``--encoder-from``, distilled then refined). Every encoder, the
untrained one, the distilled one and the gradient itself are judged by LDS on the held-out
runs x held-out queries only (Spearman over the runs of the summed scores against the
negated loss, per query, averaged), with a bootstrap interval over runs and queries, and
each training's CPU seconds are printed.

    python benchmarks/airrep_curve.py runs/v/runs runs/pool runs/hq --encoder-from runs/encoder
    python benchmarks/airrep_curve.py runs/v/runs runs/pool runs/hq --encoder-from runs/encoder \
        --ks 8,16,all --epochs 2 --pooling attention --json runs/airrep_curve.json

At the demo's size (240 pool samples, 60-130 queries, ~60 runs) the defaults train 8 encoders
(2 epochs of a few steps of 32 pool samples + 16 queries each; distill's 64-text steps take
3-6 s on MiniLM on this 2-core machine) in an estimated 5-10 minutes on CPU; --ks, --epochs and
--batch-pool trade the curve's detail for time. Estimated, not yet measured on a real store.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import common  # noqa: F401  (offline hub, quiet tokenizers)


def parse_ks(text: str, n_train: int) -> list[int]:
    """``8,16,all`` -> run counts, each at most ``n_train`` (``all``: every training run);
    duplicates after capping dropped, order kept."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        k = n_train if part == "all" else min(int(part), n_train)
        if k < 2:
            raise SystemExit(f"--ks: {part!r}: training needs at least 2 runs")
        if k not in out:
            out.append(k)
    return out


def main(argv=None) -> dict:
    import numpy as np

    from influcoder.distillation.run_settings import (
        POOLING_CHOICES,
        RunsArguments,
        heldout_mask,
        split_runs,
    )
    from influcoder.encoders.settings import DEFAULT_ENCODER
    from influcoder.evaluation.baselines import bm25_scores, encoder_scores, random_scores
    from influcoder.groundtruth.influence import cosine_scores
    from influcoder.io.stores import open_store
    from influcoder.io.tables import format_table
    from influcoder.validation.effects import lds
    from influcoder.workflows.run_distill import distill_runs, read_runs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", help="the run store (OUT/runs of validate --lds-subsets M)")
    ap.add_argument("pool", help="the pool's gradient store the runs trained on")
    ap.add_argument("queries", help="the query store the runs measured (validate's HELDOUT)")
    ap.add_argument("--encoder-from", required=True, help="a gradient-distilled encoder dir")
    ap.add_argument("--base", default=DEFAULT_ENCODER, help="the untrained encoder")
    ap.add_argument("--ks", default="8,16,32,all", help="training run counts, comma separated")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=RunsArguments.lr)
    ap.add_argument("--pooling", choices=POOLING_CHOICES, default="sum")
    ap.add_argument("--batch-pool", type=int, default=32)
    ap.add_argument("--heldout-runs", type=float, default=RunsArguments.heldout_runs)
    ap.add_argument("--heldout-queries", type=float, default=RunsArguments.heldout_queries)
    ap.add_argument("--heldout-where", default=None, help="FIELD=VALUE: the held-out queries")
    ap.add_argument("--seed", type=int, default=0, help="split, batches and bootstrap")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--json", default=None, help="also write the rows here")
    a = ap.parse_args(argv)

    args = RunsArguments(
        epochs=a.epochs,
        lr=a.lr,
        pooling=a.pooling,
        batch_pool=a.batch_pool,
        heldout_runs=a.heldout_runs,
        heldout_queries=a.heldout_queries,
        heldout_where=a.heldout_where,
        seed=a.seed,
    )
    data = read_runs(a.runs, a.pool, a.queries)
    held = heldout_mask([s.meta for s in data.queries], args.heldout_where)
    split = split_runs(*data.losses.shape, args, held)
    if len(split.heldout_runs) < 2 or not len(split.heldout_queries):
        raise SystemExit("held-out runs and queries are needed: raise --heldout-runs/-queries")
    held_q = split.heldout_queries
    subsets = [np.flatnonzero(data.members[r]) for r in split.heldout_runs]
    held_losses = data.losses[np.ix_(split.heldout_runs, held_q)]
    queries = [data.queries[j] for j in held_q]
    print(
        f"{len(data.members)} runs ({len(split.train_runs)} training, {len(subsets)} held "
        f"out), {len(data.queries)} queries ({len(split.train_queries)} training, "
        f"{len(held_q)} held out), pool of {len(data.pool)}"
    )

    rows = []

    def judge(method: str, scores, k=None, cpu=None) -> None:
        score = lds(scores, subsets, held_losses, n_boot=a.n_boot, seed=a.seed)
        rows.append(
            {
                "method": method,
                "runs": k,
                "lds": score["lds"],
                "low": score["low"],
                "high": score["high"],
                "cpu_seconds": cpu,
            }
        )
        print(f"  {method} k={k}: LDS {score['lds']:+.3f} cpu {cpu}", flush=True)

    gradient = cosine_scores(open_store(a.pool), open_store(a.queries))
    judge("gradient", gradient[:, data.columns[held_q]].astype(np.float64))
    judge("bm25", bm25_scores(data.pool, queries)[0])
    judge("random", random_scores(data.pool, queries, seed=a.seed)[0])
    for name, path in (("untrained", a.base), ("distilled", a.encoder_from)):
        judge(name, encoder_scores(str(path), data.pool, queries)[0])
    for k in parse_ks(a.ks, len(split.train_runs)):
        for name, start in (("runs", a.base), ("distilled+runs", a.encoder_from)):
            cpu = time.process_time()
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "encoder"
                distill_runs(
                    data,
                    out,
                    replace(args, train_runs=k),
                    encoder=start,
                    progress=False,
                    judge=False,
                )
                cpu = round(time.process_time() - cpu, 2)
                # scored from its directory, as `influcoder lds -e NAME=DIR` scores it
                judge(name, encoder_scores(str(out), data.pool, queries)[0], k, cpu)

    table = [
        {
            "method": r["method"],
            "runs": r["runs"] if r["runs"] is not None else "-",
            "lds": r["lds"],
            "lds_95%": f"[{r['low']:+.3f}, {r['high']:+.3f}]",
            "cpu_s": r["cpu_seconds"] if r["cpu_seconds"] is not None else "-",
        }
        for r in rows
    ]
    print(format_table(table))
    result = {
        "runs": a.runs,
        "settings": args.to_dict(),
        "encoder_from": a.encoder_from,
        "base": a.base,
        "split": {k: len(v) for k, v in split.to_dict().items()},
        "rows": rows,
    }
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
