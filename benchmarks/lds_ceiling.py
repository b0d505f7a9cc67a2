"""How high can LDS go on these runs? The seed-to-seed agreement of the retraining itself.

LDS correlates a method's predictions with the losses of runs trained on random subsets. Those
losses are noisy: the same subset trained with another seed (adapter initialisation and data
order) gives other losses. Two run stores of one validation recipe, trained on the same
subsets with different ``--seeds`` (the second with ``--lds-seed`` equal to the first's and
``--lds-subsets`` up to the first's), give per query the Spearman correlation, over the common
subsets, between one seed's losses and the other's: the LDS that one retraining scores as a
prediction of another (``seed-to-seed``). If the per-query test-retest reliability is ``r``, no
prediction of a run's loss can correlate with it above about ``sqrt(r)`` (the attenuation
bound): the ``ceiling`` column, the mean over queries of ``sqrt(max(r, 0))``. Intervals: the
same bootstrap as LDS (subsets and queries resampled).

    python benchmarks/lds_ceiling.py runs/demo/lds/runs runs/demo/lds_seed1/runs \\
        runs/demo/lds/grad_queries --by part

No retraining: seconds.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs_a", help="a run store with LDS subset runs")
    p.add_argument("runs_b", help="a run store with runs of the same subsets, another seed")
    p.add_argument("queries", help="the query store the runs measured")
    p.add_argument("--by", default=None, help="also per value of this query field")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--json", default=None, help="write the figures here")
    return p.parse_args(argv)


def common_losses(a, b, queries):
    """``(kinds, losses_a, losses_b)`` over the subsets both stores trained, every query
    both measured (columns in the order of ``measured_queries`` of ``a``)."""
    from influcoder.validation.saved import measured_losses, measured_queries

    subsets_a, losses_a = a.lds_runs()
    subsets_b, losses_b = b.lds_runs()
    where_b = {tuple(s.tolist()): i for i, s in enumerate(subsets_b)}
    rows = [
        (i, where_b[tuple(s.tolist())])
        for i, s in enumerate(subsets_a)
        if tuple(s.tolist()) in where_b
    ]
    if len(rows) < 3:
        sys.exit(f"only {len(rows)} subsets trained in both stores; need 3 or more")
    ia, ib = (np.array(x) for x in zip(*rows))
    cols, parts = measured_queries(a, queries)
    la, lb = measured_losses(losses_a, parts)[ia], measured_losses(losses_b, parts)[ib]
    return cols, la, lb


def figures(la, lb, n_boot):
    from influcoder.metrics import bootstrap_interval, column_spearman, per_anchor_spearman

    r = np.nan_to_num(column_spearman(-la, -lb), nan=0.0)
    low, high = bootstrap_interval(per_anchor_spearman, -la, -lb, n_resamples=n_boot, seed=0)
    return {
        "seed_to_seed": float(r.mean()),
        "low": low,
        "high": high,
        "ceiling": float(np.sqrt(np.clip(r, 0, None)).mean()),
        "n_queries": int(r.size),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    from influcoder import open_store
    from influcoder.validation.runstore import open_runs

    a, b = open_runs(args.runs_a), open_runs(args.runs_b)
    queries = open_store(args.queries).samples
    cols, la, lb = common_losses(a, b, queries)
    out = {"subsets": int(la.shape[0]), "all": figures(la, lb, args.n_boot)}
    if args.by:
        kinds = np.array([str(queries[c].meta.get(args.by)) for c in cols])
        out["by"] = {
            k: figures(la[:, kinds == k], lb[:, kinds == k], args.n_boot)
            for k in sorted(set(kinds))
        }
    print(f"{out['subsets']} subsets trained with both seeds")
    print(f"{'queries':<24} {'n':>4} {'seed-to-seed':>13} {'95%':>17} {'ceiling':>8}")
    for name, f in [("all", out["all"]), *out.get("by", {}).items()]:
        print(
            f"{name:<24} {f['n_queries']:>4} {f['seed_to_seed']:>13.3f} "
            f"[{f['low']:+.3f}, {f['high']:+.3f}] {f['ceiling']:>8.3f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
