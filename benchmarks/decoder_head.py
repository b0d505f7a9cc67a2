"""The decoder as the encoder: a closed-form head (the one ``distill`` fits) on the decoder's
own representations (its last hidden states averaged over the response tokens, with the
ground truth's adapter: ``repsim``'s features) instead of on a sentence encoder's
embeddings, scored by LDS on saved runs beside the gradient, Rep-Sim, the distilled encoder
and BM25. The head is fitted on the pool and the training queries (as ``distill`` fits the
demo's); choose on the validation block, report the report block.

    OMP_NUM_THREADS=1 python benchmarks/decoder_head.py runs/demo/lds_q/runs \\
        runs/demo/grad_pool runs/demo/grad_train_queries runs/demo/lds_q/grad_queries \\
        --encoder runs/demo/encoder --cache runs/demo/decoder_reps --by block,part

A decoder forward pass per sample (cached in --cache as .npy), then seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import common
import numpy as np

POOLING_HELP = (
    "response, all, last, or layers (every layer's response tokens, each layer's part of "
    "unit norm: repsim-layers' features)"
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.saved_runs_arguments(p)
    p.add_argument("train_queries", help="the query gradient store the head is fitted on")
    p.add_argument("queries", help="the query gradient store the runs measured")
    p.add_argument("--encoder", default=None, help="a distilled encoder to score beside")
    p.add_argument("--pooling", default="response", help=POOLING_HELP)
    p.add_argument("--cache", default=None, help="keep the representations here (.npy)")
    p.add_argument("--components", type=int, default=None, help="default: distill's")
    p.add_argument("--by", default="block", help="also per value of these query fields")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def representations(collector, store, name: str, pooling: str, cache: str | None):
    path = Path(cache, f"{name}-{pooling}.npy") if cache else None
    if path is not None and path.is_file():
        return np.load(path)
    layers = "all" if pooling == "layers" else "last"
    pooling = "response" if pooling == "layers" else pooling
    reps = collector.representations(store.samples, str(store.path), pooling, layers)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, reps)
    return reps


def main(argv=None) -> None:
    args = parse_args(argv)
    from influcoder.distillation.head_fit import fit_head, head_scores
    from influcoder.distillation.linear import DEFAULT_COMPONENTS
    from influcoder.evaluation.baselines import bm25_scores
    from influcoder.groundtruth.resident import ResidentCollector
    from influcoder.io.stores import open_store
    from influcoder.io.tables import format_table
    from influcoder.similarity import cosine_matrix
    from influcoder.validation.runstore import open_runs
    from influcoder.validation.saved import lds_table, score_runs

    pool, train, queries = (open_store(p) for p in (args.pool, args.train_queries, args.queries))
    collector = ResidentCollector(pool, device="cpu")
    reps = {
        name: representations(collector, store, name, args.pooling, args.cache)
        for name, store in (("pool", pool), ("train", train), ("queries", queries))
    }
    head = fit_head(
        reps["pool"],
        pool.vectors(),
        reps["train"],
        train.vectors(),
        components=args.components or DEFAULT_COMPONENTS,
        kinds=("linear", "kernel"),
        similarity="auto",
    )
    print(f"head: {head.card()['kind']}, similarity {head.similarity}", flush=True)
    scores = {
        "gradient": cosine_matrix(pool.vectors(), queries.vectors()),
        "repsim": cosine_matrix(reps["pool"], reps["queries"]),
        "decoder+head": head_scores(head(reps["pool"]), head(reps["queries"]), head.similarity),
        "bm25": bm25_scores(pool.samples, queries.samples)[0],
    }
    if args.encoder:
        from influcoder.encoders.backends import FastEncoder
        from influcoder.encoders.directory import encoder_similarity
        from influcoder.encoders.views import sample_encoder

        encoder = sample_encoder(args.encoder, lambda path: FastEncoder(path, backend="torch"))
        e_pool, e_q = encoder.encode_samples(pool.samples), encoder.encode_samples(queries.samples)
        sim = encoder_similarity(args.encoder)
        scores["distilled"] = head_scores(np.asarray(e_pool), np.asarray(e_q), sim)
    by = args.by.split(",") if "," in args.by else args.by
    rows = score_runs(open_runs(args.runs), scores, queries.samples, by=by, n_boot=args.n_boot)
    print(format_table(lds_table(rows, by)))
    from influcoder.validation.effects import paired_lds_difference
    from influcoder.validation.saved import measured_losses, measured_queries

    runs = open_runs(args.runs)
    cols, parts = measured_queries(runs, queries.samples)
    subsets, losses = runs.lds_runs()
    measured = measured_losses(losses, parts)
    paired = []
    for block in ("report", "validation"):
        keep = [i for i, c in enumerate(cols) if queries.samples[c].meta.get("block") == block]
        for a, b in (("decoder+head", "distilled"), ("gradient", "decoder+head")):
            if a in scores and b in scores:
                d = paired_lds_difference(
                    (scores[a][:, cols[keep]], scores[b][:, cols[keep]]),
                    subsets,
                    measured[:, keep],
                    n_boot=args.n_boot,
                )
                paired.append({"pair": f"{a} - {b}", "block": block, **d})
    print(format_table([{k: v for k, v in p.items() if not isinstance(v, list)} for p in paired]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"head": head.card(), "rows": rows, "paired": paired}, f, indent=2, default=str
            )


if __name__ == "__main__":
    main()
