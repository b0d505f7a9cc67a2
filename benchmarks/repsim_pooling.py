"""Rep-Sim (the decoder's own representations, DATE-LM's strongest rival of the gradient on
toxicity) with each way of pooling the last hidden states, scored by LDS on saved runs: the
response tokens (the default of the ``repsim`` baseline), all tokens, the last token. The
gradient, BM25 and the untrained encoder are scored beside them for reference. Choose the
pooling on the validation block; report the report block.

    OMP_NUM_THREADS=1 python benchmarks/repsim_pooling.py runs/demo/lds_q/runs \\
        runs/demo/grad_pool runs/demo/lds_q/grad_queries --by block --json repsim.json

One forward pass of the decoder per sample and pooling (no backward, no retraining).
"""

from __future__ import annotations

import argparse
import json
import time

import common


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.saved_runs_arguments(p)
    p.add_argument("queries", help="the query gradient store the runs measured")
    p.add_argument(
        "--by",
        default="block",
        help="also per value of this query field (or of each of several, comma separated)",
    )
    p.add_argument("--poolings", default="response,all,last")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="write the figures here")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from influcoder.evaluation.baselines import bm25_scores, encoder_scores
    from influcoder.evaluation.repsim import repsim_scores
    from influcoder.io.stores import open_store
    from influcoder.io.tables import format_table
    from influcoder.similarity import cosine_matrix
    from influcoder.validation.runstore import open_runs
    from influcoder.validation.saved import lds_table, score_runs

    pool, queries = open_store(args.pool), open_store(args.queries)
    scores = {"gradient": cosine_matrix(pool.vectors(), queries.vectors())}
    seconds = {}
    for pooling in args.poolings.split(","):
        start = time.perf_counter()
        scores[f"repsim-{pooling}"], _ = repsim_scores(
            pool, queries, device=args.device, pooling=pooling
        )
        seconds[f"repsim-{pooling}"] = time.perf_counter() - start
        print(f"repsim-{pooling}: {seconds[f'repsim-{pooling}']:.0f} s", flush=True)
    scores["bm25"], _ = bm25_scores(pool.samples, queries.samples)
    scores["untrained"], _ = encoder_scores("all-minilm-l6-v2", pool.samples, queries.samples)
    by = args.by.split(",") if "," in args.by else args.by
    rows = score_runs(open_runs(args.runs), scores, queries.samples, by=by, n_boot=args.n_boot)
    print(format_table(lds_table(rows, by)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "seconds": seconds}, f, indent=2)


if __name__ == "__main__":
    main()
