"""Is an encoder card's held-out fidelity estimate honest? The card against a separate test.

``distill`` holds a share of the pool samples and queries out of everything and records the
saved encoder's per-anchor and aggregated Spearman on them in its card (``fidelity``). This
scores the same encoder on separate test blocks (gradient stores of other pool samples and
queries, collected ``--like`` its ground truth, never distilled on) and prints both, with the
difference: the card should be within its interval of the separate figure. With a gradient
basis in the encoder, the separate test also scores ``--query-gradients`` (each test query's
own gradient on the head's directions against the encoder's pool embeddings).

    influcoder distill runs/lc_sampling/grad_train_pool runs/lc_sampling/grad_train_queries \\
        -o runs/lc_sampling/encoder_card --epochs 0
    python benchmarks/card_estimate.py runs/lc_sampling/encoder_card \\
        --pool runs/lc_sampling/grad_test_pool,runs/lc_sampling/grad_extra_pool \\
        --queries runs/lc_sampling/grad_test_queries,runs/lc_sampling/grad_extra_queries

Seconds to minutes: one encoder pass over the test samples.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("encoder", help="a distilled encoder directory whose card has `fidelity`")
    p.add_argument("--pool", required=True, help="test pool gradient stores, comma separated")
    p.add_argument("--queries", required=True, help="test query gradient stores, comma separated")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--json", default=None, help="write the figures here")
    return p.parse_args(argv)


def stacked(paths: str):
    """The samples and vectors of several stores, in order."""
    from influcoder.io.stores import open_store

    stores = [open_store(p) for p in paths.split(",")]
    samples = [s for store in stores for s in store.samples]
    return samples, np.vstack([store.vectors() for store in stores]), stores[0]


def figures(gt, pred, seed: int) -> dict:
    from influcoder.metrics import aggregated_spearman, bootstrap_interval, per_anchor_spearman

    out = {}
    for name, fn in (("per_anchor", per_anchor_spearman), ("aggregated", aggregated_spearman)):
        low, high = bootstrap_interval(fn, gt, pred, seed=seed)
        out[name] = {"value": fn(gt, pred), "low": low, "high": high}
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    from influcoder.attribution.query_gradients import stored_query_scores
    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.basis import has_basis
    from influcoder.encoders.views import sample_encoder
    from influcoder.io.stores import check_same_setup, open_store
    from influcoder.io.tables import format_table
    from influcoder.similarity import cosine_matrix

    card = json.loads((Path(args.encoder) / "influcoder_distill.json").read_text())
    if "fidelity" not in card:
        raise SystemExit(f"{args.encoder}: its card has no held-out estimate (fidelity)")
    pool, gp, pool_store = stacked(args.pool)
    queries, gq, query_store = stacked(args.queries)
    check_same_setup(pool_store, query_store)
    held = set(card["fidelity"].get("pool_ids", [])) | set(card["fidelity"].get("query_ids", []))
    if held & {s.id for s in pool + queries}:
        raise SystemExit("the test blocks share samples with the card's held-out block")
    gt = cosine_matrix(gp, gq)
    encoder = sample_encoder(args.encoder, lambda path: FastEncoder(path, backend="torch"))
    pool_emb = np.asarray(encoder.encode_samples(pool), dtype=np.float64)
    query_emb = np.asarray(encoder.encode_samples(queries), dtype=np.float64)
    separate = {"encoder": figures(gt, cosine_matrix(pool_emb, query_emb), args.seed)}
    if has_basis(args.encoder):  # each query store's own gradients, side by side
        by_store = [
            stored_query_scores(args.encoder, pool_emb, open_store(path))
            for path in args.queries.split(",")
        ]
        separate["query gradients"] = figures(gt, np.hstack(by_store), args.seed)
    estimate = card["fidelity"]["encoder"]
    rows = []
    for name in ("per_anchor", "aggregated"):
        e = estimate[f"{name}_spearman"]
        rows.append(
            {
                "figure": name,
                "card (held out)": f"{e['value']:+.3f} [{e['low']:+.2f}, {e['high']:+.2f}]",
                "separate test": "{value:+.3f} [{low:+.2f}, {high:+.2f}]".format(
                    **separate["encoder"][name]
                ),
                "card - separate": e["value"] - separate["encoder"][name]["value"],
                **(
                    {
                        "separate, query gradients": "{value:+.3f} [{low:+.2f}, {high:+.2f}]".format(
                            **separate["query gradients"][name]
                        )
                    }
                    if "query gradients" in separate
                    else {}
                ),
            }
        )
    f = card["fidelity"]
    print(
        f"card: {f['n_pool']} pool x {f['n_queries']} queries held out; separate test: "
        f"{len(pool)} pool x {len(queries)} queries"
    )
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"card": f, "separate": separate, "rows": rows}, indent=2, default=float)
        )


if __name__ == "__main__":
    main()
