"""Where does the distilled encoder lose LDS against the gradient? Query side, pool side, or
the head's low-rank space.

A distilled encoder with a head predicts each sample's coordinates on the top ``k``
principal directions of the ground-truth gradients (the pool and the training queries it was
fitted on, uncentred; ``influcoder.distillation.linear``). Its score of a pool sample for a
query is the cosine of two predictions. Swapping one prediction for the true coordinates
splits the gap between the gradient and the encoder on saved retraining runs:

- ``gradient``: true pool x true query gradients (the ground truth);
- ``projected``: both projected on the head's ``k`` directions (what a perfect head could
  reach);
- ``true query``: the encoder's pool predictions x the query's true projected gradient (one
  backward pass per query at attribution time; the pool stays embedded);
- ``true pool``: true projected pool gradients x the encoder's query predictions;
- ``encoder``: both predicted (what influcoder ships).

    python benchmarks/lds_gap.py runs/demo/lds_q/runs runs/demo/grad_pool \\
        runs/demo/lds_q/grad_queries runs/demo/grad_train_queries runs/demo/encoder --by part \\
        --paired block=report

No retraining: an encoder pass over pool and queries, then seconds of scoring.
"""

from __future__ import annotations

import argparse
import json

import common
import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.saved_runs_arguments(p)
    p.add_argument("queries", help="the query gradient store the runs measured")
    p.add_argument("train_queries", help="the query store the encoder's head was fitted on")
    p.add_argument("encoder", help="a distilled encoder directory with a head")
    p.add_argument("--components", type=int, default=None, help="default: the head's")
    p.add_argument("--by", default=None, help="also per value of this query field")
    p.add_argument(
        "--paired",
        metavar="FIELD=VALUE",
        default=None,
        help="also each row's LDS minus the gradient's on the queries with FIELD=VALUE "
        "(e.g. block=report), with a paired bootstrap interval",
    )
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--json", default=None, help="write the figures here")
    return p.parse_args(argv)


def gap_scores(gp, gt, gq, pool_pred, query_pred, components: int) -> dict[str, np.ndarray]:
    """Method -> ``[pool, queries]`` scores: the five rows of the module docstring."""
    from influcoder.distillation.linear import principal_directions
    from influcoder.similarity import cosine_matrix, unit_rows

    v = principal_directions(np.vstack([gp, gt]), components)
    zp, zq = unit_rows(gp) @ v.T, unit_rows(gq) @ v.T
    return {
        "gradient": cosine_matrix(gp, gq),
        "projected": cosine_matrix(zp, zq),
        "true query": cosine_matrix(pool_pred, zq),
        "true pool": cosine_matrix(zp, query_pred),
        "encoder": cosine_matrix(pool_pred, query_pred),
    }


def paired_difference(a, b, subsets, losses, *, n_boot: int = 1000, seed: int = 0):
    """``(difference, low, high)`` of
    :func:`~influcoder.validation.effects.paired_lds_difference`."""
    from influcoder.validation.effects import paired_lds_difference

    d = paired_lds_difference((a, b), subsets, losses, n_boot=n_boot, seed=seed)
    return d["difference"], d["low"], d["high"]


def main(argv=None) -> None:
    args = parse_args(argv)
    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.views import sample_encoder
    from influcoder.io.stores import open_store
    from influcoder.io.tables import format_table
    from influcoder.validation.runstore import open_runs
    from influcoder.validation.saved import lds_table, score_runs

    pool, queries, train = (open_store(p) for p in (args.pool, args.queries, args.train_queries))
    encoder = sample_encoder(args.encoder, lambda path: FastEncoder(path, backend="torch"))
    pool_pred = np.asarray(encoder.encode_samples(pool.samples), dtype=np.float64)
    query_pred = np.asarray(encoder.encode_samples(queries.samples), dtype=np.float64)
    components = args.components or pool_pred.shape[1]
    scores = gap_scores(
        pool.vectors().astype(np.float64),
        train.vectors().astype(np.float64),
        queries.vectors().astype(np.float64),
        pool_pred,
        query_pred,
        components,
    )
    rows = score_runs(open_runs(args.runs), scores, queries.samples, by=args.by, n_boot=args.n_boot)
    print(format_table(lds_table(rows, args.by)))
    paired = []
    if args.paired:  # each row against the gradient, on the queries of one block
        from influcoder.validation.saved import measured_losses, measured_queries

        field, value = args.paired.split("=", 1)
        runs = open_runs(args.runs)
        cols, parts = measured_queries(runs, queries.samples)
        subsets, losses = runs.lds_runs()
        measured = measured_losses(losses, parts)
        keep = [i for i, c in enumerate(cols) if str(queries.samples[c].meta.get(field)) == value]
        for name, s in scores.items():
            if name != "gradient":
                d, low, high = paired_difference(
                    s[:, cols[keep]],
                    scores["gradient"][:, cols[keep]],
                    subsets,
                    measured[:, keep],
                    n_boot=args.n_boot,
                )
                paired.append(
                    {"method": name, "minus gradient": d, "95%": f"[{low:+.3f}, {high:+.3f}]"}
                )
        print(f"\nLDS minus the gradient's, {args.paired} ({len(keep)} queries), paired bootstrap")
        print(format_table(paired))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"components": components, "rows": rows, "paired": paired}, f, indent=2)


if __name__ == "__main__":
    main()
